"""The whole board top (UART + link protocol + GRU core; no PLL) in Amaranth's simulator.

The host's own protocol code (gru_hw.link, gru_hw.protocol) drives the RX pin bit by bit through a
fake serial port; every output must equal the bit-exact golden model, and corrupt requests must be
refused without changing anything.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import data, memory, stream, wiring
from amaranth.sim import Simulator

from gru_hw import link
from gru_hw.boards.link import FrameReceiver, ReplySender, RequestExecutor
from gru_hw.boards.sim import run_board_sim
from gru_hw.boards.top import BoardTop
from gru_hw.errors import GruHwError
from gru_hw.gateware.streams import input_layout, output_layout
from gru_hw.golden import int_forward_q
from gru_hw.protocol import (
    CMD_IDENTIFY, CMD_READ, CMD_RUN, CMD_WEIGHTS, ERROR_NAMES, ERR_ADDRESS, ERR_CRC, ERR_LENGTH,
    ERR_TIMEOUT, ERR_UNKNOWN_COMMAND, REPLY_ERROR, REPLY_OK, BoardDescriptor, encode_frame,
    error_payload, model_hash, pack_ints, weights_checksum, weights_payload,
)
from gru_hw.quant import choose_spec, quantize_model

from conftest import random_model

DIVISOR = 4
TIMEOUT = 600  # cycles without a byte before a frame counts as cut short


@pytest.fixture(scope="module")
def qm():
    model = random_model(np.random.default_rng(7), 3, 4, head=2)
    return quantize_model(model, choose_spec(model, 8, 10))


def _top(qm, lanes=4):
    return BoardTop(qm, lanes, None, divisor=DIVISOR, timeout_cycles=TIMEOUT, max_steps=8)


def _inputs(qm, n, t, seed):
    rng = np.random.default_rng(seed)
    f = qm.spec.x_fmt
    xq = rng.integers(f.min_int, f.max_int + 1, size=(n, t, qm.input_size))
    lengths = rng.integers(1, t + 1, size=n)
    lengths[0] = t
    return xq, lengths


def _expect_refusal(port, frame: bytes, error: int) -> None:
    """Send ``frame``; the board must refuse it with ``error`` (and the command it received)."""
    port.write(frame)
    code, payload = link.read_frame(port)
    assert code == REPLY_ERROR, f"expected an error reply, got 0x{code:02x}"
    assert payload[0] == error, f"expected {ERROR_NAMES[error]}, got {payload[0]}"
    assert payload == error_payload(error, frame[1] if len(frame) > 1 else 0)


def test_board_end_to_end(qm):
    """Identify, run sequences (== golden), keep-state runs, and every kind of corrupt frame."""
    xq, lengths = _inputs(qm, 4, 6, seed=1)
    gold = int_forward_q(qm, xq, lengths).y
    kq, klen = _inputs(qm, 3, 4, seed=2)
    kgold = int_forward_q(qm, kq, klen, keep_state=True).y

    def host(port):
        c = link.BoardClient(port, expect=qm)
        d = c.identify()
        assert (d.input_size, d.output_size, d.num_layers) == (3, 2, 1)
        assert d.model_hash == model_hash(qm)
        got = [c.run_sequence(xq[n, :lengths[n]]) for n in range(len(xq))]
        last = got[-1]
        assert all(r.cycles > 0 for r in got)

        step = d.step_bytes
        good = encode_frame(CMD_RUN, pack_ints(xq[0, :2], d.x_bytes))
        bad_crc = good[:-1] + bytes([good[-1] ^ 0x01])
        _expect_refusal(port, bad_crc, ERR_CRC)
        flipped = bytearray(good)
        flipped[5] ^= 0x40  # a payload bit flipped on the line
        _expect_refusal(port, bytes(flipped), ERR_CRC)
        _expect_refusal(port, encode_frame(0x42), ERR_UNKNOWN_COMMAND)
        _expect_refusal(port, encode_frame(CMD_RUN, bytes(step + 1)), ERR_LENGTH)
        _expect_refusal(port, encode_frame(CMD_RUN, b""), ERR_LENGTH)
        too_long = bytes(step * (d.max_steps + 1))
        _expect_refusal(port, encode_frame(CMD_RUN, too_long), ERR_LENGTH)
        _expect_refusal(port, encode_frame(CMD_IDENTIFY, b"\x00"), ERR_LENGTH)
        _expect_refusal(port, good[:len(good) // 2], ERR_TIMEOUT)  # cut short
        # None of that changed anything: the last result is still there ...
        again = c.read_result()
        assert np.array_equal(again.y, last.y) and again.cycles == last.cycles
        # ... and good frames still work, with line noise before the sync byte.
        port.write(b"\x00\x13\x37")
        r0 = c.run_sequence(xq[0, :lengths[0]])
        assert np.array_equal(r0.y, got[0].y)

        c.reset_state()
        kept = [c.run_sequence(kq[n, :klen[n]], keep_state=True).y for n in range(len(kq))]
        return np.stack([r.y for r in got]), np.stack(kept)

    y, ky = run_board_sim(_top(qm), DIVISOR, host, timeout_cycles=20 * TIMEOUT)
    np.testing.assert_array_equal(y, gold)
    np.testing.assert_array_equal(ky, kgold)


def test_board_refuses_other_model(qm):
    """A host that expects another model refuses to talk to the board."""
    other = random_model(np.random.default_rng(8), 3, 4, head=2)
    oqm = quantize_model(other, qm.spec)

    def host(port):
        with pytest.raises(GruHwError, match="holds a different model"):
            link.BoardClient(port, expect=oqm).identify()
        # READ before any RUN is refused, too.
        with pytest.raises(link.BoardRefused, match="no result"):
            link.BoardClient(port).request(CMD_READ)
        return True

    assert run_board_sim(_top(qm, lanes=2), DIVISOR, host, timeout_cycles=20 * TIMEOUT)


def _save_float_model(q, path) -> None:
    """Write a float .npz model whose quantization with q.spec is exactly q."""
    from gru_hw.fixed import to_float

    arrays = {}
    for k, layer in enumerate(q.layers):
        arrays[f"w_ih_{k}"] = to_float(layer.w_ih, q.spec.layers[k].w_ih_fmt)
        arrays[f"w_hh_{k}"] = to_float(layer.w_hh, q.spec.layers[k].w_hh_fmt)
        arrays[f"b_ih_{k}"] = to_float(layer.b_ih, q.spec.b_ih_fmt(k))
        arrays[f"b_hh_{k}"] = to_float(layer.b_hh, q.spec.b_hh_fmt(k))
    arrays["head_w"] = to_float(q.head_w, q.spec.head.w_fmt)
    arrays["head_b"] = to_float(q.head_b, q.spec.head_b_fmt())
    np.savez(path, **arrays)


def test_run_command_through_simulated_board(qm, tmp_path, monkeypatch, capsys):
    """`gru-hw run --check` (the command line, in-process) against the simulated board."""
    import json

    from gru_hw import cli

    model_path = tmp_path / "model.npz"
    _save_float_model(qm, model_path)
    q = qm
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    (build_dir / "report.json").write_text(json.dumps(
        {"board": "icebreaker", "uart": {"baud": 115200}, "quant": q.spec.to_json()}))
    rng = np.random.default_rng(11)
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=rng.uniform(-4, 4, (3, 5, 3)), lengths=np.array([5, 2, 4]))
    out = tmp_path / "out.npz"
    argv = ["run", str(inputs), "-o", str(out), "--port", "sim", "--model", str(model_path),
            "--build-dir", str(build_dir), "--check"]

    def host(port):
        monkeypatch.setattr(link, "open_port", lambda device, baud: port)
        return cli.main(argv)

    status = run_board_sim(_top(qm, lanes=2), DIVISOR, host, timeout_cycles=20 * TIMEOUT)
    assert status == 0
    with np.load(out) as f:
        assert f["y"].shape == (3, 2) and f["cycles"].shape == (3,)
    assert "all outputs equal golden" in capsys.readouterr().out


# ---- run-time weights over the UART -------------------------------------------------------------
def _runtime_top(qm, lanes=3):
    return BoardTop(qm, lanes, None, divisor=DIVISOR, timeout_cycles=TIMEOUT, max_steps=8,
                    runtime_weights=True)


def test_board_loads_weights_over_the_uart(qm):
    """Issue 7: the WEIGHTS command end to end; corrupt weight frames change nothing.

    The board is built for model A; model B (same shape and QuantSpec) is loaded through the
    UART, every output then equals B's golden model, the checksum in IDENTIFY is B's; corrupted
    frames of a third model C are refused and B's weights and checksum stay.
    """
    rng = np.random.default_rng(21)
    qb = quantize_model(random_model(rng, 3, 4, head=2), qm.spec)
    qc = quantize_model(random_model(rng, 3, 4, head=2), qm.spec)
    xq, lengths = _inputs(qm, 3, 5, seed=4)
    gold_a = int_forward_q(qm, xq, lengths).y
    gold_b = int_forward_q(qb, xq, lengths).y
    assert not np.array_equal(gold_a, gold_b)
    crc_of = {name: weights_checksum(link.weight_words_of(q, 3),
                                     BoardDescriptor.for_model(q, lanes=3, max_steps=8, clock_hz=1,
                                                               runtime_weights=True).weight_bytes)
              for name, q in (("a", qm), ("b", qb), ("c", qc))}

    def host(port):
        d = link.BoardClient(port, expect=qm).identify()  # power-up: A's weights
        assert d.runtime_weights and d.weights_crc == crc_of["a"]
        assert d.model_hash == model_hash(qb, weights=False)  # shape and formats only
        with pytest.raises(GruHwError, match=r"holds other weights .*load them first"):
            link.BoardClient(port, expect=qb).identify()
        ya = [link.BoardClient(port, expect=qm).run_sequence(xq[n, :lengths[n]]).y
              for n in range(len(xq))]

        cb = link.BoardClient(port, expect=qb, loading=True)
        assert cb.load_weights(qb) == crc_of["b"]
        assert link.BoardClient(port, expect=qb).identify().weights_crc == crc_of["b"]
        yb = [cb.run_sequence(xq[n, :lengths[n]]).y for n in range(len(xq))]

        # corrupt frames carrying C's first words: refused, nothing written
        core = link.weight_map(qc, 3)
        words = list(core.regions(qc)[0].words[:6])
        assert d.weight_bytes > 1  # so that one byte more is not a whole word
        good = encode_frame(CMD_WEIGHTS,
                                     weights_payload(0, words, d.weight_bytes))
        bad = bytearray(good)
        bad[8] ^= 0x10  # a bit of the first word flipped on the line
        _expect_refusal(port, bytes(bad), ERR_CRC)
        _expect_refusal(port, good[:-3], ERR_TIMEOUT)  # cut short
        _expect_refusal(port, encode_frame(CMD_WEIGHTS, good[4:-2] + b"\x00"),
                        ERR_LENGTH)  # not a whole number of words
        _expect_refusal(port, encode_frame(CMD_WEIGHTS, b"\x00\x00\x00\x00"),
                        ERR_LENGTH)  # no words
        past = (core.lanes << core.offset_bits) + core.schedule.bias_rows - 2
        _expect_refusal(port, encode_frame(
            CMD_WEIGHTS, weights_payload(past, words[:3], d.weight_bytes)),
                        ERR_ADDRESS)  # runs past the bias region
        _expect_refusal(port, encode_frame(
            CMD_WEIGHTS, weights_payload(1 << 30, words[:1], d.weight_bytes)),
                        ERR_ADDRESS)  # no such region
        after = link.BoardClient(port, expect=qb).identify()
        assert after.weights_crc == crc_of["b"]
        yb2 = [cb.run_sequence(xq[n, :lengths[n]]).y for n in range(len(xq))]
        return np.stack(ya), np.stack(yb), np.stack(yb2)

    ya, yb, yb2 = run_board_sim(_runtime_top(qm), DIVISOR, host, timeout_cycles=20 * TIMEOUT)
    np.testing.assert_array_equal(ya, gold_a)
    np.testing.assert_array_equal(yb, gold_b)
    np.testing.assert_array_equal(yb2, gold_b)


def test_fixed_board_refuses_weights(qm):
    """A board built without --runtime-weights: WEIGHTS is an unknown command, the host says why."""
    def host(port):
        _expect_refusal(port, encode_frame(CMD_WEIGHTS, bytes(6)),
                        ERR_UNKNOWN_COMMAND)
        with pytest.raises(GruHwError, match=r"built without run-time weights"):
            link.BoardClient(port).load_weights(qm)
        return True

    assert run_board_sim(_top(qm, lanes=2), DIVISOR, host, timeout_cycles=20 * TIMEOUT)


def test_run_load_weights_command_through_simulated_board(qm, tmp_path, monkeypatch, capsys):
    """`gru-hw run --load-weights --check` against a simulated run-time-weights board."""
    import json

    from gru_hw import cli

    qb = quantize_model(random_model(np.random.default_rng(31), 3, 4, head=2), qm.spec)
    _save_float_model(qb, tmp_path / "b.npz")
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    report = {"board": "icebreaker", "uart": {"baud": 115200}, "quant": qm.spec.to_json(),
              "runtime_weights": True}
    (build_dir / "report.json").write_text(json.dumps(report))
    rng = np.random.default_rng(12)
    np.savez(tmp_path / "in.npz", x=rng.uniform(-4, 4, (2, 4, 3)), lengths=np.array([4, 3]))

    argv = ["run", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"), "--port", "sim",
            "--model", str(tmp_path / "b.npz"), "--build-dir", str(build_dir), "--check"]

    def host(port):
        monkeypatch.setattr(link, "open_port", lambda device, baud: port)
        assert cli.main(argv) == 2  # the board still holds A's weights
        assert "holds other weights" in capsys.readouterr().err
        return cli.main(argv + ["--load-weights"])

    status = run_board_sim(_runtime_top(qm, lanes=2), DIVISOR, host, timeout_cycles=20 * TIMEOUT)
    assert status == 0
    out = capsys.readouterr().out
    assert "loaded" in out and "all outputs equal golden" in out
    # a build without --runtime-weights: refused before the port is opened
    report["runtime_weights"] = False
    (build_dir / "report.json").write_text(json.dumps(report))
    assert cli.main(argv + ["--load-weights"]) == 2
    assert "made without --runtime-weights" in capsys.readouterr().err


# ---- the link's components on their own -------------------------------------------------------
def test_reply_sender_frames_like_the_host():
    """ReplySender's bytes are encode_frame's, with its declared latency, under backpressure."""
    layout = data.StructLayout({"short": 16, "long": 40})
    dut = ReplySender(layout)
    replies = [(0x81, 5, "long", 0x0504030201), (REPLY_ERROR, 2, "short", 0x0302),
               (0x82, 0, "short", 0), (0x84, 3, "long", 0xFFFFFFFFFF)]
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def bench(ctx):
        for n, (code, length, src, value) in enumerate(replies):
            ready = itertools.cycle([1] if n % 2 == 0 else [1, 0, 0, 1])  # backpressure
            ctx.set(dut.reply.sources[src], value)
            ctx.set(dut.reply.code, code)
            ctx.set(dut.reply.length, length)
            ctx.set(dut.reply.select.as_value(), 1 << list(layout.members).index(src))
            ctx.set(dut.reply.start, 1)
            await ctx.tick()
            ctx.set(dut.reply.start, 0)
            sent, offered, accepted, t, waiting = b"", [], [], 1, False
            while not ctx.get(dut.reply.done):  # t: cycles since start
                ctx.set(dut.o_stream.ready, next(ready))
                if ctx.get(dut.o_stream.valid):
                    if not waiting:
                        offered.append(t)
                    waiting = not ctx.get(dut.o_stream.ready)
                    if not waiting:
                        accepted.append(t)
                        sent += bytes([ctx.get(dut.o_stream.payload)])
                await ctx.tick()
                t += 1
            assert sent == encode_frame(code, value.to_bytes(8, "little")[:length])
            assert offered[0] == ReplySender.LATENCY and t == accepted[-1] + 1
            assert all(o - a == ReplySender.BYTE_CYCLES for a, o in zip(accepted, offered[1:]))

    sim.add_testbench(bench)
    sim.run()


def test_frame_receiver_takes_frames_and_times_out():
    """FrameReceiver: noise skipped, frames checked and held until released, the timeout."""
    tmo, step = 20, 2
    m = Module()
    m.submodules.rx = dut = FrameReceiver(max_len=8, step_bytes=step, timeout_cycles=tmo)
    m.submodules.buf = buf = memory.Memory(shape=8, depth=8, init=[])
    wiring.connect(m, dut.buf_w, buf.write_port())
    f = dut.frame
    sim = Simulator(m)
    sim.add_clock(1e-6)

    async def send(ctx, data: bytes, idle) -> list[int]:
        """Send bytes (with idle cycles between); return the cycles in which done was high."""
        done = []
        for i, byte in enumerate(data):
            for _ in range(next(idle)):
                await ctx.tick()
            ctx.set(dut.i_stream.payload, byte)
            ctx.set(dut.i_stream.valid, 1)
            if ctx.get(f.done):
                done.append(i)
            await ctx.tick()
            ctx.set(dut.i_stream.valid, 0)
        return done

    async def bench(ctx):
        idle = itertools.cycle([0, 2, 0, 1])
        run = encode_frame(CMD_RUN, bytes(range(10, 14)))  # two steps
        assert await send(ctx, b"\x00\x13" + run, idle) == [len(run) + 1]
        assert ctx.get(f.crc_ok) and not ctx.get(dut.active)
        assert (ctx.get(f.code), ctx.get(f.length)) == (CMD_RUN, 4)
        assert ctx.get(f.steps_m1) == 1 and ctx.get(f.whole_steps)
        assert [ctx.get(buf.data[i]) for i in range(4)] == [10, 11, 12, 13]
        # held: another frame is dropped until the release
        assert await send(ctx, encode_frame(CMD_IDENTIFY), idle) == []
        assert ctx.get(f.code) == CMD_RUN
        ctx.set(f.release, 1)
        await ctx.tick()
        ctx.set(f.release, 0)
        bad = bytearray(encode_frame(CMD_READ, b"\x05\x06\x07"))
        bad[5] ^= 0x20
        assert await send(ctx, bytes(bad), idle) == [len(bad) - 1]
        assert not ctx.get(f.crc_ok) and not ctx.get(f.whole_steps)
        ctx.set(f.release, 1)
        await ctx.tick()
        ctx.set(f.release, 0)
        await send(ctx, encode_frame(CMD_IDENTIFY, b"\x01")[:4], iter([0] * 4))  # cut short
        cycles = 1
        while not ctx.get(f.timeout):
            assert ctx.get(dut.active)
            await ctx.tick()
            cycles += 1
        assert cycles == tmo + FrameReceiver.TIMEOUT_LATENCY
        assert ctx.get(f.code) == CMD_IDENTIFY
        await ctx.tick()
        assert not ctx.get(dut.active)

    sim.add_testbench(bench)
    sim.run()


def test_frame_receiver_takes_a_stream_id_first():
    """With several streams: the payload's first byte is the stream id (``frame.stream``, and
    address 0 of the buffer); the steps are counted after it."""
    step = 2
    m = Module()
    m.submodules.rx = dut = FrameReceiver(max_len=7, step_bytes=step, timeout_cycles=20,
                                          stream_id=True)
    m.submodules.buf = buf = memory.Memory(shape=8, depth=7, init=[])
    wiring.connect(m, dut.buf_w, buf.write_port())
    f = dut.frame
    sim = Simulator(m)
    sim.add_clock(1e-6)

    async def bench(ctx):
        for payload, steps_m1, whole in ((bytes([3, 10, 11, 12, 13]), 1, True),
                                         (bytes([1, 10, 11, 12]), 0, False),
                                         (bytes([2]), -1, True)):
            for byte in encode_frame(CMD_RUN, payload):
                ctx.set(dut.i_stream.payload, byte)
                ctx.set(dut.i_stream.valid, 1)
                await ctx.tick()
            ctx.set(dut.i_stream.valid, 0)
            await ctx.tick()
            assert ctx.get(f.crc_ok) and ctx.get(f.stream) == payload[0]
            assert ctx.get(f.whole_steps) == whole
            assert ctx.get(f.steps_m1) == steps_m1 % (1 << 17)
            assert [ctx.get(buf.data[i]) for i in range(len(payload))] == list(payload)
            ctx.set(f.release, 1)
            await ctx.tick()
            ctx.set(f.release, 0)

    sim.add_testbench(bench)
    sim.run()


def test_request_executor_latency(qm):
    """RequestExecutor asks for replies with its declared latencies (answer, refusal, timeout)."""
    d = BoardDescriptor.for_model(qm, lanes=1, max_steps=8, clock_hz=1_000_000)
    dut = RequestExecutor(
        d, max_len=8 * d.step_bytes,
        x_stream=stream.Signature(input_layout(d.input_size, d.x_fmt.width)),
        y_stream=stream.Signature(output_layout(d.output_size, d.out_fmt.width)))
    f = dut.frame
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    cases = [("done", CMD_IDENTIFY, True, CMD_IDENTIFY | REPLY_OK, RequestExecutor.REPLY_LATENCY),
             ("done", CMD_IDENTIFY, False, REPLY_ERROR, RequestExecutor.REFUSE_LATENCY),
             ("done", 0x42, True, REPLY_ERROR, RequestExecutor.REFUSE_LATENCY),
             ("timeout", CMD_RUN, True, REPLY_ERROR, 1)]

    async def bench(ctx):
        ctx.set(f.whole_steps, 1)
        for pulse, code, crc_ok, reply, latency in cases:
            ctx.set(f.code, code)
            ctx.set(f.crc_ok, crc_ok)
            ctx.set(getattr(f, pulse), 1)
            await ctx.tick()
            ctx.set(getattr(f, pulse), 0)
            t = 1
            while not ctx.get(dut.reply.start):
                await ctx.tick()
                t += 1
            assert (t, ctx.get(dut.reply.code)) == (latency, reply), (pulse, code, crc_ok)
            await ctx.tick().repeat(3)
            ctx.set(dut.reply.done, 1)
            assert ctx.get(f.release)
            await ctx.tick()
            ctx.set(dut.reply.done, 0)
        # a one-step RUN: the step reaches the core, its output goes back in the reply
        ctx.set(f.code, CMD_RUN)
        ctx.set(f.length, d.step_bytes)
        ctx.set(f.done, 1)
        await ctx.tick()
        ctx.set(f.done, 0)
        t = 1
        while not ctx.get(dut.x_stream.valid):
            await ctx.tick()
            t += 1
        assert t == d.step_bytes + RequestExecutor.RUN_LATENCY
        assert ctx.get(dut.x_stream.payload.first) and ctx.get(dut.x_stream.payload.last)
        ctx.set(dut.x_stream.ready, 1)
        await ctx.tick()
        ctx.set(dut.x_stream.ready, 0)
        ctx.set(dut.y_stream.valid, 1)
        await ctx.tick().until(dut.y_stream.ready)
        ctx.set(dut.y_stream.valid, 0)
        while not ctx.get(dut.reply.start):
            await ctx.tick()
        assert ctx.get(dut.reply.code) == CMD_RUN | REPLY_OK and ctx.get(dut.busy)

    sim.add_testbench(bench)
    sim.run()


# ---- interleaved streams (a core with S > 1 hidden states) --------------------------------------
def test_board_streams_keep_their_own_state(qm, tmp_path, monkeypatch):
    """An S = 2 board: RUN_KEEPs alternating between the streams continue each stream's own
    state (== golden_streams with keep_state); a RESET_STATE of one stream restarts only it,
    of every stream all; out-of-range stream ids and malformed stream frames are refused and
    change nothing; ``run_on_board(streams=2)`` deals sequences to the streams and checks."""
    from gru_hw import board
    from gru_hw.protocol import (
        CMD_RESET_STATE, CMD_RUN_KEEP, DESCRIPTOR_BYTES, ERR_STREAM, STREAMS_OFFSET,
    )
    from gru_hw.streams import golden_streams

    xq, lengths = _inputs(qm, 8, 4, seed=5)
    # sequences 0..5 alternate (not strictly) between the streams with RUN_KEEP; then stream 0
    # is reset and runs 6 (a fresh state: stream "2" for the golden model) while stream 1 runs 7
    stream_of = [0, 1, 1, 0, 1, 0, 0, 1]
    gold, _ = golden_streams(qm, xq, lengths, [0, 1, 1, 0, 1, 0, 2, 1], keep_state=True)
    fresh = int_forward_q(qm, xq, lengths).y  # each sequence from zero
    rng = np.random.default_rng(13)
    np.savez(tmp_path / "in.npz", x=rng.uniform(-4, 4, (5, 3, 3)), lengths=[3, 2, 3, 1, 2])

    def host(port):
        c = link.BoardClient(port, expect=qm)
        d = c.identify()
        assert d.streams == 2 and d.stream_bytes == 1
        raw = c.request(CMD_IDENTIFY)
        assert len(raw) == DESCRIPTOR_BYTES + 1 and raw[STREAMS_OFFSET] == 2
        got = {}
        for n in range(6):
            got[n] = c.run_sequence(xq[n, :lengths[n]], keep_state=True, stream=stream_of[n]).y
            if n == 3:  # refused frames between the runs change no stream's state
                for sid in (2, 255):
                    with pytest.raises(GruHwError, match=f"stream {sid} is out of range"):
                        c.run_sequence(xq[0, :1], keep_state=True, stream=sid)
                    _expect_refusal(port, encode_frame(
                        CMD_RUN_KEEP, bytes([sid]) + pack_ints(xq[0, :2], d.x_bytes)), ERR_STREAM)
                    _expect_refusal(port, encode_frame(CMD_RESET_STATE, bytes([sid])),
                                    ERR_STREAM)
                with pytest.raises(GruHwError, match="stream 3 is out of range"):
                    c.reset_state(stream=3)
                _expect_refusal(port, encode_frame(CMD_RUN_KEEP, b"\x01"), ERR_LENGTH)
                _expect_refusal(port, encode_frame(  # the steps without the stream id
                    CMD_RUN_KEEP, pack_ints(xq[0, :2], d.x_bytes)), ERR_LENGTH)
                _expect_refusal(port, encode_frame(CMD_RESET_STATE, b"\x00\x00"), ERR_LENGTH)
        c.reset_state(stream=0)
        for n in (6, 7):
            got[n] = c.run_sequence(xq[n, :lengths[n]], keep_state=True, stream=stream_of[n]).y
        # RUN starts from zero on either stream; RESET_STATE of every stream restarts both
        run1 = c.run_sequence(xq[2, :lengths[2]], stream=1).y
        c.reset_state()
        after = [c.run_sequence(xq[n, :lengths[n]], keep_state=True, stream=n % 2).y
                 for n in (4, 5)]
        monkeypatch.setattr(link, "open_port", lambda device, baud: port)
        summary = board.run_on_board("sim", tmp_path / "in.npz", tmp_path / "out.npz", baud=1,
                                     qm=qm, check=True, keep_state=True, streams=2)
        with pytest.raises(GruHwError, match=r"streams must be within 1..2"):
            board.run_on_board("sim", tmp_path / "in.npz", tmp_path / "out2.npz", baud=1,
                               qm=qm, keep_state=True, streams=3)
        return np.stack([got[n] for n in range(8)]), run1, np.stack(after), summary

    top = BoardTop(qm, 2, None, divisor=DIVISOR, timeout_cycles=TIMEOUT, max_steps=4, streams=2)
    assert top.link.descriptor.streams == 2 and top.core.config.streams == 2
    y, run1, after, summary = run_board_sim(top, DIVISOR, host, timeout_cycles=20 * TIMEOUT)
    np.testing.assert_array_equal(y, gold)
    assert not np.array_equal(y[4:6], fresh[4:6])  # the kept states mattered
    np.testing.assert_array_equal(run1, fresh[2])
    np.testing.assert_array_equal(after, fresh[[4, 5]])
    assert summary["match"] and summary["streams"] == 2 and summary["sequences"] == 5
