"""The whole board top (UART + link protocol + GRU core; no PLL) in Amaranth's simulator.

The host's own protocol code (gru_hw.link) drives the RX pin bit by bit through a fake serial port;
every output must equal the bit-exact golden model, and corrupt requests must be refused without
changing anything.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from gru_hw import link
from gru_hw.boards.sim import run_board_sim
from gru_hw.boards.top import BoardTop
from gru_hw.errors import GruHwError
from gru_hw.golden import int_forward_q
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
    port.write(frame)
    code, payload = link.read_frame(port)
    assert code == link.REPLY_ERROR, f"expected an error reply, got 0x{code:02x}"
    assert payload[0] == error, f"expected {link.ERROR_NAMES[error]}, got {payload[0]}"


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
        assert d.model_hash == link.model_hash(qm)
        got = [c.run_sequence(xq[n, :lengths[n]]) for n in range(len(xq))]
        last = got[-1]
        assert all(r.cycles > 0 for r in got)

        step = d.step_bytes
        good = link.encode_frame(link.CMD_RUN, link.pack_ints(xq[0, :2], d.x_bytes))
        bad_crc = good[:-1] + bytes([good[-1] ^ 0x01])
        _expect_refusal(port, bad_crc, link.ERR_CRC)
        flipped = bytearray(good)
        flipped[5] ^= 0x40  # a payload bit flipped on the line
        _expect_refusal(port, bytes(flipped), link.ERR_CRC)
        _expect_refusal(port, link.encode_frame(0x42), link.ERR_UNKNOWN_COMMAND)
        _expect_refusal(port, link.encode_frame(link.CMD_RUN, bytes(step + 1)), link.ERR_LENGTH)
        _expect_refusal(port, link.encode_frame(link.CMD_RUN, b""), link.ERR_LENGTH)
        too_long = bytes(step * (d.max_steps + 1))
        _expect_refusal(port, link.encode_frame(link.CMD_RUN, too_long), link.ERR_LENGTH)
        _expect_refusal(port, link.encode_frame(link.CMD_IDENTIFY, b"\x00"), link.ERR_LENGTH)
        _expect_refusal(port, good[:len(good) // 2], link.ERR_TIMEOUT)  # cut short
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
            link.BoardClient(port).request(link.CMD_READ)
        return True

    assert run_board_sim(_top(qm, lanes=2), DIVISOR, host, timeout_cycles=20 * TIMEOUT)


def test_descriptor_layout_is_stable(qm):
    """The IDENTIFY payload layout (what flashed boards answer) does not drift silently."""
    d = link.BoardDescriptor.for_model(qm, lanes=4, max_steps=100, clock_hz=42_000_000)
    raw = d.to_bytes()
    assert raw[:4] == b"GRUH" and len(raw) == 46
    assert struct.unpack_from("<H", raw, link.WEIGHTS_CRC_OFFSET)[0] == d.weights_crc
    assert link.BoardDescriptor.from_bytes(raw) == d
    assert struct.unpack_from("<H", raw, 13)[0] == 3  # input size after magic, version, hash


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
    """`gru-hw run --check` (gru_hw.board.run_inputs) against the simulated board."""
    import argparse
    import json

    from gru_hw import board

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
    args = argparse.Namespace(inputs=str(inputs), output=str(out), port="sim",
                              model=str(model_path),
                              build_dir=str(build_dir), check=True, keep_state=False, baud=None)

    def host(port):
        monkeypatch.setattr(link, "open_port", lambda device, baud: port)
        return board.run_inputs(args)

    result = run_board_sim(_top(qm, lanes=2), DIVISOR, host, timeout_cycles=20 * TIMEOUT)
    assert result["match"], result.get("mismatch")
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
    crc_of = {name: link.weights_checksum(link.weight_words_of(q, 3),
                                          link.BoardDescriptor.for_model(
                                              q, lanes=3, max_steps=8, clock_hz=1,
                                              runtime_weights=True).weight_bytes)
              for name, q in (("a", qm), ("b", qb), ("c", qc))}

    def host(port):
        d = link.BoardClient(port, expect=qm).identify()  # power-up: A's weights
        assert d.runtime_weights and d.weights_crc == crc_of["a"]
        assert d.model_hash == link.model_hash(qb, weights=False)  # shape and formats only
        with pytest.raises(GruHwError, match=r"holds other weights .*--load-weights"):
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
        good = link.encode_frame(link.CMD_WEIGHTS, struct.pack("<I", 0) +
                                 link.pack_ints(words, d.weight_bytes))
        bad = bytearray(good)
        bad[8] ^= 0x10  # a bit of the first word flipped on the line
        _expect_refusal(port, bytes(bad), link.ERR_CRC)
        _expect_refusal(port, good[:-3], link.ERR_TIMEOUT)  # cut short
        _expect_refusal(port, link.encode_frame(link.CMD_WEIGHTS, good[4:-2] + b"\x00"),
                        link.ERR_LENGTH)  # not a whole number of words
        _expect_refusal(port, link.encode_frame(link.CMD_WEIGHTS, b"\x00\x00\x00\x00"),
                        link.ERR_LENGTH)  # no words
        past = (core.lanes << core.offset_bits) + core.schedule.bias_rows - 2
        _expect_refusal(port, link.encode_frame(link.CMD_WEIGHTS, struct.pack("<I", past) +
                                                link.pack_ints(words[:3], d.weight_bytes)),
                        link.ERR_ADDRESS)  # runs past the bias region
        _expect_refusal(port, link.encode_frame(link.CMD_WEIGHTS, struct.pack("<I", 1 << 30) +
                                                link.pack_ints(words[:1], d.weight_bytes)),
                        link.ERR_ADDRESS)  # no such region
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
        _expect_refusal(port, link.encode_frame(link.CMD_WEIGHTS, bytes(6)),
                        link.ERR_UNKNOWN_COMMAND)
        with pytest.raises(GruHwError, match=r"built without --runtime-weights"):
            link.BoardClient(port).load_weights(qm)
        return True

    assert run_board_sim(_top(qm, lanes=2), DIVISOR, host, timeout_cycles=20 * TIMEOUT)


def test_run_load_weights_command_through_simulated_board(qm, tmp_path, monkeypatch, capsys):
    """`gru-hw run --load-weights --check` against a simulated run-time-weights board."""
    import argparse
    import json

    from gru_hw import board

    qb = quantize_model(random_model(np.random.default_rng(31), 3, 4, head=2), qm.spec)
    _save_float_model(qb, tmp_path / "b.npz")
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    report = {"board": "icebreaker", "uart": {"baud": 115200}, "quant": qm.spec.to_json(),
              "runtime_weights": True}
    (build_dir / "report.json").write_text(json.dumps(report))
    rng = np.random.default_rng(12)
    np.savez(tmp_path / "in.npz", x=rng.uniform(-4, 4, (2, 4, 3)), lengths=np.array([4, 3]))

    def args(**kw):
        base = dict(inputs=str(tmp_path / "in.npz"), output=str(tmp_path / "out.npz"),
                    port="sim", model=str(tmp_path / "b.npz"), build_dir=str(build_dir),
                    check=True, keep_state=False, baud=None, load_weights=False)
        return argparse.Namespace(**{**base, **kw})

    def host(port):
        monkeypatch.setattr(link, "open_port", lambda device, baud: port)
        with pytest.raises(GruHwError, match="holds other weights"):
            board.run_inputs(args())  # the board still holds A's weights
        return board.run_inputs(args(load_weights=True))

    result = run_board_sim(_runtime_top(qm, lanes=2), DIVISOR, host, timeout_cycles=20 * TIMEOUT)
    assert result["match"], result.get("mismatch")
    out = capsys.readouterr().out
    assert "loaded" in out and "all outputs equal golden" in out
    # a build without --runtime-weights: refused before the port is opened
    report["runtime_weights"] = False
    (build_dir / "report.json").write_text(json.dumps(report))
    with pytest.raises(GruHwError, match="made without --runtime-weights"):
        board.run_inputs(args(load_weights=True))
