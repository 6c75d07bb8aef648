"""Host side of the UART link: CRC, framing, descriptor, value packing, client error handling."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gru_hw import link
from gru_hw.errors import GruHwError
from gru_hw.quant import choose_spec, quantize_model

from conftest import random_model


class BytesPort:
    """A port that replays canned bytes and records what was written."""

    def __init__(self, data: bytes = b"") -> None:
        self.rx = io.BytesIO(data)
        self.written = b""

    def read(self, size: int = 1) -> bytes:
        return self.rx.read(size)

    def write(self, data: bytes) -> int:
        self.written += data
        return len(data)


@pytest.fixture(scope="module")
def qm():
    model = random_model(np.random.default_rng(5), 3, 4, head=2)
    return quantize_model(model, choose_spec(model, 8, 12))


def test_crc16_ccitt_false():
    assert link.crc16(b"123456789") == 0x29B1
    assert link.crc16(b"") == 0xFFFF


@given(st.integers(0, 255), st.binary(max_size=300))
def test_frame_round_trip(code, payload):
    frame = link.encode_frame(code, payload)
    assert frame[0] == link.SYNC and len(frame) == len(payload) + 6
    assert link.crc16(frame[1:]) == 0  # CRC sent MSB first: the residue is zero
    assert link.read_frame(BytesPort(b"\x00\xff" + frame)) == (code, payload)


def test_read_frame_errors():
    frame = link.encode_frame(0x81, b"abc")
    with pytest.raises(link.LinkError, match="bad CRC"):
        link.read_frame(BytesPort(frame[:-1] + bytes([frame[-1] ^ 1])))
    with pytest.raises(link.LinkError, match="cut short in its payload"):
        link.read_frame(BytesPort(frame[:5]))
    with pytest.raises(link.LinkError, match="no reply"):
        link.read_frame(BytesPort(b""))


@given(st.integers(2, 24).flatmap(
    lambda w: st.tuples(st.just(w), st.lists(st.integers(-(1 << (w - 1)), (1 << (w - 1)) - 1),
                                             min_size=1, max_size=20))))
def test_pack_unpack(args):
    width, values = args
    nb = link.byte_width(width)
    data = link.pack_ints(np.array(values), nb)
    assert len(data) == nb * len(values)
    assert link.unpack_ints(data, nb, width).tolist() == values


def test_descriptor_round_trip_and_hash(qm):
    d = link.BoardDescriptor.for_model(qm, lanes=6, max_steps=85, clock_hz=42_000_000)
    assert link.BoardDescriptor.from_bytes(d.to_bytes()) == d
    assert d.x_bytes == 2 and d.step_bytes == 6 and d.result_bytes == 2 * 2 + 4
    assert link.model_hash(qm) == d.model_hash
    other = quantize_model(random_model(np.random.default_rng(6), 3, 4, head=2), qm.spec)
    assert link.model_hash(other) != d.model_hash
    with pytest.raises(link.LinkError, match="did not identify"):
        link.BoardDescriptor.from_bytes(b"NOPE" + d.to_bytes()[4:])


def test_client_reports_refusals_and_wrong_model(qm):
    err = link.encode_frame(link.REPLY_ERROR, bytes([link.ERR_CRC, link.CMD_RUN]))
    c = link.BoardClient(BytesPort(err))
    with pytest.raises(link.BoardRefused, match="command 0x03: bad CRC"):
        c.request(link.CMD_RUN, b"\0\0")
    assert c.port.written == link.encode_frame(link.CMD_RUN, b"\0\0")

    other = quantize_model(random_model(np.random.default_rng(9), 3, 4, head=2), qm.spec)
    desc = link.BoardDescriptor.for_model(other, lanes=1, max_steps=4, clock_hz=12_000_000)
    reply = link.encode_frame(link.CMD_IDENTIFY | link.REPLY_OK, desc.to_bytes())
    with pytest.raises(GruHwError, match="holds a different model"):
        link.BoardClient(BytesPort(reply), expect=qm).identify()


def test_client_checks_sequences_before_sending(qm):
    desc = link.BoardDescriptor.for_model(qm, lanes=1, max_steps=4, clock_hz=12_000_000)
    c = link.BoardClient(BytesPort())
    c.descriptor = desc
    with pytest.raises(GruHwError, match="1..4"):
        c.run_sequence(np.zeros((5, 3), dtype=np.int64))
    with pytest.raises(GruHwError, match=r"must be \(T, 3\)"):
        c.run_sequence(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(GruHwError, match="outside x_fmt"):
        c.run_sequence(np.full((2, 3), 1 << 20, dtype=np.int64))
    assert c.port.written == b""
