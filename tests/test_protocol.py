"""The link protocol (gru_hw.protocol): the host CRC against the gateware's, frames, descriptor.

The host's table CRC-16 and the gateware's (``amaranth.lib.crc`` from ``crc16_parameters``, and
the weights checksum's XOR network) are two implementations of one definition: they are checked
against each other here, in software and in simulation.
"""

from __future__ import annotations

import binascii
import random
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.lib import crc
from amaranth.sim import Simulator
from hypothesis import given
from hypothesis import strategies as st

from gru_hw import protocol
from gru_hw.boards.link import add_crc16, crc_step
from gru_hw.errors import GruHwError
from gru_hw.quant import choose_spec, quantize_model

from conftest import random_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def qm():
    model = random_model(np.random.default_rng(5), 3, 4, head=2)
    return quantize_model(model, choose_spec(model, 8, 12))


# ---- CRC-16 --------------------------------------------------------------------------------------
def test_crc16_is_ccitt_false():
    """The check value of CRC-16/CCITT-FALSE, and the parameters are the catalog's."""
    assert protocol.crc16(b"123456789") == 0x29B1
    assert protocol.crc16(b"") == protocol.CRC16_INIT == 0xFFFF
    catalog = crc.catalog.CRC16_CCITT_FALSE(8)
    assert repr(protocol.crc16_parameters) == repr(catalog)
    assert protocol.crc16_parameters.residue() == 0


@given(st.binary(max_size=200), st.binary(max_size=50))
def test_host_crc_equals_gateware_model(a, b):
    """The host's table CRC equals amaranth.lib.crc's software model (and the standard
    library's CRC-CCITT), and continues."""
    assert protocol.crc16(a) == protocol.crc16_parameters.compute(a)
    assert protocol.crc16(a) == binascii.crc_hqx(a, protocol.CRC16_INIT)
    assert protocol.crc16(b, protocol.crc16(a)) == protocol.crc16(a + b)


def _byte_strings(seed: int, count: int, max_len: int) -> list[bytes]:
    rng = random.Random(seed)
    return [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, max_len)))
            for _ in range(count)]


def test_host_crc_equals_gateware_processor():
    """The gateware's CRC register (a Processor, restarted as the link does) equals the host's.

    Random byte strings, one after the other with a restart between them; after each byte the
    register holds the host CRC of the string so far, and after the CRC itself (MSB first) the
    residue is detected.
    """
    strings = _byte_strings(1, 40, 24)
    m = Module()
    restart = Signal()
    proc = add_crc16(m, "crc", restart)
    sim = Simulator(m)
    sim.add_clock(1e-6)

    async def bench(ctx):
        for data in strings:
            ctx.set(restart, 1)
            await ctx.tick()
            ctx.set(restart, 0)
            assert ctx.get(proc.crc) == protocol.CRC16_INIT
            framed = data + protocol.crc16(data).to_bytes(2, "big")
            for i, byte in enumerate(framed):
                ctx.set(proc.data, byte)
                ctx.set(proc.valid, 1)
                await ctx.tick()
                ctx.set(proc.valid, 0)
                assert ctx.get(proc.crc) == protocol.crc16(framed[:i + 1]), (data, i)
                assert ctx.get(proc.match_detected) == (i == len(framed) - 1 or
                                                        protocol.crc16(framed[:i + 1]) == 0)

    sim.add_testbench(bench)
    sim.run()


def test_host_crc_equals_weights_checksum_gateware():
    """The weights checksum's register (crc_step) continues the host CRC from any value."""
    strings = _byte_strings(2, 30, 16)
    starts = [random.Random(3).getrandbits(16) for _ in strings]
    m = Module()
    value = Signal(16)
    byte = Signal(8)
    load = Signal()
    load_value = Signal(16)
    with m.If(load):
        m.d.sync += value.eq(load_value)
    with m.Else():
        m.d.sync += value.eq(crc_step(protocol.crc16_parameters, value, byte))
    sim = Simulator(m)
    sim.add_clock(1e-6)

    async def bench(ctx):
        for start, data in zip(starts, strings):
            ctx.set(load, 1)
            ctx.set(load_value, start)
            await ctx.tick()
            ctx.set(load, 0)
            for i, b in enumerate(data):
                ctx.set(byte, b)
                await ctx.tick()
                assert ctx.get(value) == protocol.crc16(data[:i + 1], start)

    sim.add_testbench(bench)
    sim.run()


def test_crc_step_refuses_reflected_input():
    with pytest.raises(ValueError, match="without input reflection"):
        crc_step(crc.catalog.CRC16_KERMIT(8), Signal(16), Signal(8))


# ---- frames --------------------------------------------------------------------------------------
@given(st.integers(0, 255), st.binary(max_size=300))
def test_frame_round_trip(code, payload):
    frame = protocol.encode_frame(code, payload)
    assert frame[0] == protocol.SYNC and len(frame) == len(payload) + protocol.FRAME_OVERHEAD
    assert protocol.crc16(frame[1:]) == 0  # CRC sent MSB first: the residue is zero
    assert protocol.decode_frame(frame) == (code, payload)


def test_decode_frame_errors():
    frame = protocol.encode_frame(protocol.CMD_RUN, b"abc")
    with pytest.raises(protocol.LinkError, match="bad CRC"):
        protocol.decode_frame(frame[:-1] + bytes([frame[-1] ^ 1]))
    with pytest.raises(protocol.LinkError, match="has a 3-byte payload"):
        protocol.decode_frame(frame[:-1])
    with pytest.raises(protocol.LinkError, match="not a frame"):
        protocol.decode_frame(b"\x00" + frame[1:])
    with pytest.raises(ValueError, match="not a byte"):
        protocol.encode_frame(256)
    with pytest.raises(GruHwError, match="longer than 65535"):
        protocol.encode_frame(protocol.CMD_RUN, bytes(protocol.MAX_PAYLOAD + 1))


def test_error_payload_round_trip():
    payload = protocol.error_payload(protocol.ERR_LENGTH, protocol.CMD_RUN)
    assert len(payload) == protocol.ERROR_PAYLOAD_BYTES
    assert protocol.parse_error(payload, 0) == (protocol.ERR_LENGTH, protocol.CMD_RUN)
    assert protocol.parse_error(payload[:1], 7) == (protocol.ERR_LENGTH, 7)
    assert set(protocol.ERROR_NAMES) == {protocol.ERR_CRC, protocol.ERR_UNKNOWN_COMMAND,
                                         protocol.ERR_LENGTH, protocol.ERR_TIMEOUT,
                                         protocol.ERR_NO_RESULT, protocol.ERR_ADDRESS,
                                         protocol.ERR_NOT_LOADED, protocol.ERR_STREAM}
    assert protocol.commands(True) == protocol.COMMANDS + (protocol.CMD_WEIGHTS,)
    assert protocol.CMD_WEIGHTS not in protocol.commands(False)


@given(st.integers(2, 24).flatmap(
    lambda w: st.tuples(st.just(w), st.lists(st.integers(-(1 << (w - 1)), (1 << (w - 1)) - 1),
                                             min_size=1, max_size=20))))
def test_pack_unpack(args):
    width, values = args
    nb = protocol.byte_width(width)
    data = protocol.pack_ints(np.array(values), nb)
    assert len(data) == nb * len(values)
    assert protocol.unpack_ints(data, nb, width).tolist() == values


def test_weights_payload_and_checksum():
    payload = protocol.weights_payload(0x123, [1, -1, 300], 2)
    assert payload[:protocol.WEIGHTS_ADDRESS_BYTES] == (0x123).to_bytes(4, "little")
    assert payload[protocol.WEIGHTS_ADDRESS_BYTES:] == protocol.pack_ints([1, -1, 300], 2)
    assert protocol.weights_checksum([1, -1, 300], 2) == protocol.crc16(payload[4:])


# ---- descriptor and model hash -----------------------------------------------------------------
def test_descriptor_round_trip_and_hash(qm):
    d = protocol.BoardDescriptor.for_model(qm, lanes=6, max_steps=85, clock_hz=42_000_000)
    raw = d.to_bytes()
    assert len(raw) == protocol.DESCRIPTOR_BYTES and raw[:4] == protocol.MAGIC
    assert protocol.BoardDescriptor.from_bytes(raw) == d
    assert d.x_bytes == 2 and d.step_bytes == 6 and d.result_bytes == 2 * 2 + 4
    assert protocol.model_hash(qm) == d.model_hash
    other = quantize_model(random_model(np.random.default_rng(6), 3, 4, head=2), qm.spec)
    assert protocol.model_hash(other) != d.model_hash
    assert protocol.model_hash(other, weights=False) == protocol.model_hash(qm, weights=False)
    with pytest.raises(protocol.LinkError, match="did not identify"):
        protocol.BoardDescriptor.from_bytes(b"NOPE" + raw[4:])
    old = bytearray(raw)
    old[4] = protocol.PROTOCOL_VERSION - 1
    with pytest.raises(protocol.LinkError, match="protocol version 1"):
        protocol.BoardDescriptor.from_bytes(bytes(old))


def test_result_payload_round_trip(qm):
    d = protocol.BoardDescriptor.for_model(qm, lanes=1, max_steps=4, clock_hz=12_000_000)
    y = np.array([d.out_fmt.min_int, d.out_fmt.max_int])
    payload = d.result_payload(y, 1234)
    assert len(payload) == d.result_bytes
    got_y, cycles = d.parse_result(payload)
    assert got_y.tolist() == y.tolist() and cycles == 1234
    with pytest.raises(protocol.LinkError, match="expected 8"):
        d.parse_result(payload[:-1])


# ---- what flashed boards speak -----------------------------------------------------------------
def test_wire_format_is_pinned(qm):
    """The numbers on the wire do not drift silently (boards in the field speak them).

    The one place that restates the protocol's numbers: everything else imports them.
    """
    p = protocol
    assert (p.SYNC, p.MAGIC, p.PROTOCOL_VERSION) == (0xA5, b"GRUH", 2)
    assert (p.CMD_IDENTIFY, p.CMD_RESET_STATE, p.CMD_RUN, p.CMD_READ, p.CMD_RUN_KEEP,
            p.CMD_WEIGHTS) == (1, 2, 3, 4, 5, 6)
    assert (p.REPLY_OK, p.REPLY_ERROR) == (0x80, 0xFF)
    assert (p.ERR_CRC, p.ERR_UNKNOWN_COMMAND, p.ERR_LENGTH, p.ERR_TIMEOUT, p.ERR_NO_RESULT,
            p.ERR_ADDRESS) == (1, 2, 3, 4, 5, 6)
    assert p.encode_frame(0x81, b"\x01\x02") == bytes([0xA5, 0x81, 2, 0, 1, 2, 0x67, 0x96])
    d = p.BoardDescriptor.for_model(qm, lanes=4, max_steps=100, clock_hz=42_000_000)
    raw = d.to_bytes()
    assert raw[:4] == b"GRUH" and len(raw) == 46 and p.WEIGHTS_CRC_OFFSET == 44
    assert int.from_bytes(raw[44:], "little") == d.weights_crc
    assert int.from_bytes(raw[13:15], "little") == 3  # input size after magic, version, hash
    assert p.BoardDescriptor.from_bytes(raw) == d


# ---- one definition ------------------------------------------------------------------------------
_RESTATED = [
    (re.compile(r"0x1021|0x29b1|crc16_update|_crc_table", re.I), "the CRC-16"),
    (re.compile(r"\b0xa5\b", re.I), "the SYNC byte"),
    (re.compile(r"b\"GRUH\"|b'GRUH'"), "the descriptor magic"),
    (re.compile(r"hashlib\.sha256\(json\.dumps\(desc"), "the model hash"),
]


def test_protocol_knowledge_has_one_definition():
    """No module or test restates the CRC, SYNC, magic or model hash that gru_hw.protocol defines.

    (This file names the CRC's check value on purpose: it pins the algorithm.)
    """
    skip = {Path(__file__).resolve(), (ROOT / "gru_hw" / "protocol.py").resolve()}
    files = {p.resolve() for folder in ("gru_hw", "boards", "sim", "tests", "bench")
             for p in (ROOT / folder).rglob("*.py")} - skip
    offenders = []
    for path in sorted(files):
        text = path.read_text()
        offenders += [f"{path.relative_to(ROOT.resolve())}: {what}" for pattern, what in _RESTATED
                      if pattern.search(text)]
    assert not offenders, offenders


# ---- interleaved streams -----------------------------------------------------------------------
def test_descriptor_streams_round_trip(qm):
    """S > 1: one byte more (S, after the checksum); S = 1 encodes exactly as before."""
    p = protocol
    one = p.BoardDescriptor.for_model(qm, lanes=4, max_steps=100, clock_hz=42_000_000)
    assert one.streams == 1 and one.stream_bytes == 0 and one.descriptor_bytes == 46
    assert p.BoardDescriptor.for_model(qm, lanes=4, max_steps=100, clock_hz=42_000_000,
                                       streams=1).to_bytes() == one.to_bytes()
    for s in (2, 3, 16, 255):
        d = p.BoardDescriptor.for_model(qm, lanes=4, max_steps=100, clock_hz=42_000_000,
                                        streams=s)
        raw = d.to_bytes()
        assert len(raw) == d.descriptor_bytes == p.DESCRIPTOR_BYTES + 1
        assert raw[:p.DESCRIPTOR_BYTES] == one.to_bytes() and raw[p.STREAMS_OFFSET] == s
        assert p.BoardDescriptor.from_bytes(raw) == d and d.stream_bytes == 1
        assert d.to_json()["streams"] == s and d.max_run_payload == 1 + d.buffer_bytes
    for bad in (0, 1):  # a streams byte is only sent by S > 1 boards
        with pytest.raises(p.LinkError, match="malformed descriptor"):
            p.BoardDescriptor.from_bytes(one.to_bytes() + bytes([bad]))
    with pytest.raises(p.LinkError, match="did not identify"):
        p.BoardDescriptor.from_bytes(one.to_bytes() + b"\x02\x00")
    for bad in (0, 256, True):
        with pytest.raises(GruHwError, match="streams must be within 1..255"):
            replace(one, streams=bad)


def test_run_and_reset_payloads_with_streams(qm):
    p = protocol
    one = p.BoardDescriptor.for_model(qm, lanes=1, max_steps=4, clock_hz=12_000_000)
    two = replace(one, streams=2)
    xq = np.array([[1, -2, 3], [-4, 5, -6]])
    steps = p.pack_ints(xq, one.x_bytes)
    assert one.run_payload(xq) == steps  # S = 1: no stream id
    assert two.run_payload(xq, 1) == b"\x01" + steps
    for d, sid in ((one, 0), (two, 0), (two, 1)):
        got_sid, got = d.parse_run_payload(d.run_payload(xq, sid))
        assert got_sid == sid and got.tolist() == xq.tolist()
    assert two.reset_payload() == one.reset_payload() == one.reset_payload(0) == b""
    assert two.reset_payload(1) == b"\x01"
    with pytest.raises(GruHwError, match=r"stream 2 is out of range: the board serves streams "
                                         r"0..1"):
        two.run_payload(xq, 2)
    with pytest.raises(GruHwError, match=r"stream 1 is out of range: .*only stream 0"):
        one.run_payload(xq, 1)
    with pytest.raises(GruHwError, match="stream -1 is out of range"):
        two.reset_payload(-1)
    with pytest.raises(GruHwError, match="must be an integer"):
        two.check_stream(1.0)
    assert two.check_stream(np.int64(1)) == 1
    assert p.ERROR_NAMES[p.ERR_STREAM] == "stream id out of range" and p.ERR_STREAM == 8
    assert p.STREAM_ID_BYTES == 1
