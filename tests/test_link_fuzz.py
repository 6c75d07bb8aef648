"""Fuzzing the board link: random and mutated byte streams into the simulated board top.

The board (UART, link, the running-sum stand-in core; no PLL) is driven through its RX pin. A
small reference model of the link (below) says where the board ends each frame and what it must
answer; the host sends the stream a frame at a time (waiting for each reply, as bytes sent while
the board replies are dropped) and checks every reply byte for byte. After every fuzzed stream a
valid request must be answered exactly. Seeds are fixed; the simulation is bounded in cycles.

A board with S = 3 streams (a stand-in with a running sum per stream) is fuzzed the same way:
its RUN, RUN_KEEP and RESET_STATE frames carry a stream id (sometimes out of range).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth import Array, Module, Mux, Signal, signed
from amaranth.lib import stream as lib_stream
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from gru_hw import link
from gru_hw.boards.sim import run_board_sim
from gru_hw.boards.top import BoardTop
from gru_hw.gateware.streams import input_layout, output_layout
from gru_hw.protocol import (
    CMD_IDENTIFY, CMD_READ, CMD_RESET_STATE, CMD_RUN, CMD_RUN_KEEP, COMMANDS, CRC_BYTES,
    ERR_CRC, ERR_LENGTH, ERR_NO_RESULT, ERR_STREAM, ERR_TIMEOUT, ERR_UNKNOWN_COMMAND, HEADER_BYTES,
    REPLY_ERROR, REPLY_OK, SYNC, crc16, encode_frame, error_payload, pack_ints, parse_header,
)
from gru_hw.quant import choose_spec, quantize_model

from conftest import random_model
from standin_core import RunningSumCore, running_sum_model

DIVISOR = 4
TIMEOUT = 200      # board cycles without a byte before a frame counts as cut short
MAX_STEPS = 3
STREAMS = 48       # fuzzed streams per run


@pytest.fixture(scope="module")
def qm():
    model = random_model(np.random.default_rng(3), 2, 3, head=3)
    # 10-bit inputs: two bytes each on the link, so payloads carry bits the board ignores
    return quantize_model(model, choose_spec(model, 8, 10))


class StreamSumCore(wiring.Component):
    """RunningSumCore's sums, one set per stream, behind the core's stream contract with S > 1
    streams: a beat adds ``x[j % I]`` to its stream's ``acc[j]`` (from zero on ``first``); a beat
    with ``last`` offers that stream's sums, with its stream id, ``latency + 1`` cycles later."""

    def __init__(self, inputs: int, outputs: int, *, x_width: int, out_width: int, streams: int,
                 latency: int = 2) -> None:
        self.inputs, self.outputs, self.out_width = inputs, outputs, out_width
        self.streams, self.latency = streams, latency
        super().__init__({
            "i_stream": In(lib_stream.Signature(input_layout(inputs, x_width, streams))),
            "o_stream": Out(lib_stream.Signature(output_layout(outputs, out_width,
                                                           streams=streams))),
        })

    def elaborate(self, platform):
        m = Module()
        acc = Array([Array([Signal(signed(self.out_width), name=f"acc{s}_{j}")
                            for j in range(self.outputs)]) for s in range(self.streams)])
        busy = Signal(range(self.latency + 1))
        sid = Signal(range(self.streams))
        emit = Signal()
        p = self.i_stream.payload
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i_stream.ready.eq(1)
                with m.If(self.i_stream.valid):
                    for j in range(self.outputs):
                        x = p.x[j % self.inputs]
                        cur = acc[p.stream][j]
                        m.d.sync += cur.eq(Mux(p.first, x, cur + x))
                    m.d.sync += [sid.eq(p.stream), emit.eq(p.last), busy.eq(self.latency)]
                    m.next = "BUSY"
            with m.State("BUSY"):
                with m.If(busy == 0):
                    with m.If(emit):
                        m.next = "OUT"
                    with m.Else():
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += busy.eq(busy - 1)
            with m.State("OUT"):
                m.d.comb += self.o_stream.valid.eq(1)
                with m.If(self.o_stream.ready):
                    m.next = "IDLE"
        for j in range(self.outputs):
            m.d.comb += self.o_stream.payload.y[j].eq(acc[sid][j])
        m.d.comb += [self.o_stream.payload.last.eq(1), self.o_stream.payload.stream.eq(sid)]
        return m


def _top(qm, streams: int = 1) -> BoardTop:
    f = qm.spec
    if streams == 1:
        core = RunningSumCore(qm.input_size, qm.output_size, x_width=f.x_fmt.width,
                              out_width=f.out_fmt.width, latency=2)
    else:
        core = StreamSumCore(qm.input_size, qm.output_size, x_width=f.x_fmt.width,
                             out_width=f.out_fmt.width, streams=streams)
    return BoardTop(qm, 1, None, core=core, divisor=DIVISOR, timeout_cycles=TIMEOUT,
                    max_steps=MAX_STEPS)


class LinkModel:
    """What the board's link does with a byte stream, request by request (the reference model).

    ``split`` finds the bytes the board takes for its next frame; ``answer`` is the reply it
    sends (code, payload), with the cycle count of a RUN left out (``None``): it is checked against
    the count the board gave for the same number of steps before.
    """

    def __init__(self, d, descriptor_bytes: bytes) -> None:
        self.d = d
        self.descriptor_bytes = descriptor_bytes
        self.max_len = d.max_steps * d.step_bytes
        # per stream: the stand-in core's sums, and whether the next RUN_KEEP starts from zero
        self.acc = np.zeros((d.streams, d.output_size), dtype=np.int64)
        self.fresh = [True] * d.streams
        self.result: bytes | None = None  # the last RUN's reply payload
        self.cycles: dict[int, int] = {}  # RUN cycle count by steps
        self.steps = 0  # of the RUN being answered
        self.stream = 0  # of the RUN being answered

    @staticmethod
    def split(stream: bytes) -> tuple[bytes, bytes, bool]:
        """Return (the bytes the board takes for its next frame, the rest, whether it is whole).

        Bytes before a SYNC are dropped by the board; a frame cut short is the whole stream.
        """
        start = stream.find(bytes([SYNC]))
        if start < 0:
            return stream, b"", False
        head = stream[start + 1:start + 1 + HEADER_BYTES]
        if len(head) < HEADER_BYTES:
            return stream, b"", False
        end = start + 1 + HEADER_BYTES + parse_header(head)[1] + CRC_BYTES
        if end > len(stream):
            return stream, b"", False
        return stream[:end], stream[end:], True

    def answer(self, piece: bytes, whole: bool) -> tuple[int, bytes | None] | None:
        """Return the reply to ``piece`` (from :meth:`split`), or None if there is none."""
        start = piece.find(bytes([SYNC]))
        if start < 0:
            return None
        frame = piece[start:]
        if not whole:
            return REPLY_ERROR, error_payload(ERR_TIMEOUT, frame[1] if len(frame) > 1 else 0)
        code, length = parse_header(frame[1:1 + HEADER_BYTES])
        payload = frame[1 + HEADER_BYTES:-CRC_BYTES]
        if crc16(frame[1:]) != 0:
            return self._refuse(ERR_CRC, code)
        if code not in COMMANDS:
            return self._refuse(ERR_UNKNOWN_COMMAND, code)
        k, streams = self.d.stream_bytes, self.d.streams  # the stream id before the steps
        if code in (CMD_RUN, CMD_RUN_KEEP):
            steps = length - k
            if not 0 < steps <= self.max_len or steps % self.d.step_bytes:
                return self._refuse(ERR_LENGTH, code)
            if k and payload[0] >= streams:
                return self._refuse(ERR_STREAM, code)
            return self._run(code, payload)
        if code == CMD_RESET_STATE and length <= k:
            if length and payload[0] >= streams:
                return self._refuse(ERR_STREAM, code)
            if length:  # one stream
                self.fresh[payload[0]] = True
            else:
                self.acc[:] = 0
                self.fresh = [True] * streams
            return code | REPLY_OK, b""
        if length:
            return self._refuse(ERR_LENGTH, code)
        if code == CMD_IDENTIFY:
            return code | REPLY_OK, self.descriptor_bytes
        if self.result is None:  # READ
            return self._refuse(ERR_NO_RESULT, code)
        return code | REPLY_OK, self.result

    @staticmethod
    def _refuse(error: int, code: int) -> tuple[int, bytes]:
        return REPLY_ERROR, error_payload(error, code)

    def _run(self, code: int, payload: bytes) -> tuple[int, None]:
        d = self.d
        sid, xq = d.parse_run_payload(payload)
        xq = xq[None]
        steps = xq.shape[1]
        y, _ = running_sum_model(xq, np.array([steps]), d.output_size, d.out_fmt.width)
        if code == CMD_RUN_KEEP and not self.fresh[sid]:
            half = 1 << (d.out_fmt.width - 1)
            y = (self.acc[sid] + y + half) % (2 * half) - half
        self.acc[sid] = y[0]
        self.fresh[sid] = False
        self.steps, self.stream = steps, sid
        return code | REPLY_OK, None

    def check(self, want: tuple[int, bytes | None], got: tuple[int, bytes], what: str) -> None:
        """Compare a reply with the model's; learn a RUN's result and cycle count."""
        assert got[0] == want[0], f"{what}: reply 0x{got[0]:02x}, expected 0x{want[0]:02x}"
        if want[1] is not None:
            assert got[1] == want[1], f"{what}: payload {got[1].hex()}, expected {want[1].hex()}"
            return
        n = self.d.output_size * self.d.y_bytes
        assert got[1][:n] == pack_ints(self.acc[self.stream], self.d.y_bytes), \
            f"{what}: outputs differ"
        cycles = int.from_bytes(got[1][n:], "little")
        assert cycles == self.cycles.setdefault(self.steps, cycles), f"{what}: cycle count"
        self.result = got[1]


# ---- the fuzzed streams -------------------------------------------------------------------------
def _stream_id(rng: random.Random, d) -> bytes:
    """A stream id for a board with several streams: mostly in range, sometimes not."""
    if d.streams == 1:
        return b""
    return bytes([rng.choice([rng.randrange(d.streams)] * 4 + [d.streams, 255])])


def _valid_frame(rng: random.Random, d) -> bytes:
    code = rng.choice(COMMANDS)
    if code in (CMD_RUN, CMD_RUN_KEEP):
        payload = bytes(rng.getrandbits(8) for _ in range(d.step_bytes * rng.randint(1, MAX_STEPS)))
        payload = _stream_id(rng, d) + payload
    elif code == CMD_RESET_STATE and d.streams > 1 and rng.random() < 0.5:
        payload = _stream_id(rng, d)
    else:
        payload = b""
    return encode_frame(code, payload)


def _mutate(rng: random.Random, frame: bytes, d) -> bytes:
    """Return ``frame`` corrupted one way (or two)."""
    f = bytearray(frame)
    kind = rng.randrange(9) if len(f) > 1 else 3
    if kind == 0:  # a bit flipped on the line
        i = rng.randrange(len(f))
        f[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # cut short
        f = f[:rng.randrange(1, len(f))]
    elif kind == 2:  # a byte lost
        del f[rng.randrange(1, len(f))]
    elif kind == 3:  # a byte added
        f.insert(rng.randrange(1, len(f) + 1), rng.getrandbits(8))
    elif kind == 4:  # another command, CRC right
        f = bytearray(encode_frame(rng.getrandbits(8), bytes(f[4:-2])))
    elif kind == 5:  # another length, CRC right
        payload = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, d.step_bytes + 1,
                                                                      d.step_bytes * 2 - 1])))
        f = bytearray(encode_frame(f[1], payload))  # f[1]: the code
    elif kind == 6:  # too many steps, CRC right
        f = bytearray(encode_frame(CMD_RUN, bytes(d.stream_bytes
                                                  + d.step_bytes * (MAX_STEPS + 1))))
    elif kind == 7:  # noise before it, and maybe a second frame after it
        f = bytearray(rng.getrandbits(8) for _ in range(rng.randint(1, 6))) + f
        if rng.random() < 0.5:
            f += _valid_frame(rng, d)
    else:  # two corruptions
        f = bytearray(_mutate(rng, _mutate(rng, bytes(f), d), d))
    return bytes(f)


def _streams(seed: int, d) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(STREAMS):
        k = rng.random()
        if k < 0.2:  # random bytes, maybe with a SYNC in them
            out.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 20))))
        elif k < 0.3:
            out.append(_valid_frame(rng, d))
        else:
            out.append(_mutate(rng, _valid_frame(rng, d), d))
    return out


@pytest.mark.parametrize("seed, n_streams", [(1, 1), (2, 1), (3, 3)])
def test_link_survives_fuzzed_streams(qm, seed, n_streams):
    """Random and mutated streams never hang the board, each frame gets the model's reply, and
    a valid request after each stream is answered exactly (boards of 1 and 3 streams)."""
    top = _top(qm, n_streams)
    d = top.link.descriptor
    assert d.streams == n_streams
    model = LinkModel(d, d.to_bytes())
    streams = _streams(seed, d)
    step = pack_ints(np.arange(d.input_size) - 1, d.x_bytes)
    probes = [encode_frame(CMD_IDENTIFY), encode_frame(CMD_READ),
              encode_frame(CMD_RUN, d.run_payload(np.arange(d.input_size) - 1))]
    if n_streams > 1:
        probes += [encode_frame(CMD_RUN_KEEP, bytes([n_streams - 1]) + step),
                   encode_frame(CMD_RESET_STATE, b"\x01")]
    counts = {"frames": 0, "refused": 0, "timeouts": 0, "stream_refused": 0}

    def exchange(port, stream: bytes, what: str) -> None:
        while stream:
            piece, stream, whole = model.split(stream)
            want = model.answer(piece, whole)
            port.write(piece)
            if want is None:
                port.wait_idle()
                continue
            got = link.read_frame(port)
            model.check(want, got, what)
            counts["frames"] += 1
            counts["refused"] += got[0] == REPLY_ERROR
            counts["stream_refused"] += got[0] == REPLY_ERROR and got[1][:1] == bytes([ERR_STREAM])
            counts["timeouts"] += not whole

    def host(port):
        for i, stream in enumerate(streams):
            exchange(port, stream, f"stream {i} ({stream.hex()})")
            exchange(port, probes[i % len(probes)], f"the request after stream {i}")
        return counts

    counts = run_board_sim(top, DIVISOR, host, timeout_cycles=20 * TIMEOUT, max_cycles=3_000_000)
    # the streams reached every kind of reply
    assert counts["refused"] > STREAMS // 3 and counts["timeouts"] > 2
    assert counts["frames"] > STREAMS
    assert (counts["stream_refused"] > 0) == (n_streams > 1)
