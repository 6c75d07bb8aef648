"""Host side of the UART link (gru_hw.link): reading frames, client error handling."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gru_hw import link
from gru_hw.errors import GruHwError
from gru_hw.protocol import (
    CMD_IDENTIFY, CMD_RUN, ERR_CRC, REPLY_ERROR, REPLY_OK, SYNC, BoardDescriptor, LinkError,
    encode_frame, error_payload,
)
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


@given(st.integers(0, 255), st.binary(max_size=300), st.binary(max_size=8))
def test_read_frame_skips_noise(code, payload, noise):
    noise = noise.replace(bytes([SYNC]), b"")
    frame = encode_frame(code, payload)
    assert link.read_frame(BytesPort(noise + frame)) == (code, payload)


def test_read_frame_errors():
    frame = encode_frame(0x81, b"abc")
    with pytest.raises(LinkError, match="bad CRC"):
        link.read_frame(BytesPort(frame[:-1] + bytes([frame[-1] ^ 1])))
    with pytest.raises(LinkError, match="cut short in its payload"):
        link.read_frame(BytesPort(frame[:5]))
    with pytest.raises(LinkError, match="no reply"):
        link.read_frame(BytesPort(b""))
    with pytest.raises(LinkError, match="no frame start in 4 bytes"):
        link.read_frame(BytesPort(bytes(5) + frame), max_skip=4)


def test_client_reports_refusals_and_wrong_model(qm):
    err = encode_frame(REPLY_ERROR, error_payload(ERR_CRC, CMD_RUN))
    c = link.BoardClient(BytesPort(err))
    with pytest.raises(link.BoardRefused, match="command 0x03: bad CRC"):
        c.request(CMD_RUN, b"\0\0")
    assert c.port.written == encode_frame(CMD_RUN, b"\0\0")

    other = quantize_model(random_model(np.random.default_rng(9), 3, 4, head=2), qm.spec)
    desc = BoardDescriptor.for_model(other, lanes=1, max_steps=4, clock_hz=12_000_000)
    reply = encode_frame(CMD_IDENTIFY | REPLY_OK, desc.to_bytes())
    with pytest.raises(GruHwError, match="holds a different model"):
        link.BoardClient(BytesPort(reply), expect=qm).identify()


def test_client_refuses_wrong_reply_code(qm):
    c = link.BoardClient(BytesPort(encode_frame(CMD_RUN | REPLY_OK)))
    with pytest.raises(LinkError, match="answered 0x83 to command 0x01"):
        c.request(CMD_IDENTIFY)


def test_client_checks_sequences_before_sending(qm):
    desc = BoardDescriptor.for_model(qm, lanes=1, max_steps=4, clock_hz=12_000_000)
    c = link.BoardClient(BytesPort())
    c.descriptor = desc
    with pytest.raises(GruHwError, match="1..4"):
        c.run_sequence(np.zeros((5, 3), dtype=np.int64))
    with pytest.raises(GruHwError, match=r"must be \(T, 3\)"):
        c.run_sequence(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(GruHwError, match="outside x_fmt"):
        c.run_sequence(np.full((2, 3), 1 << 20, dtype=np.int64))
    assert c.port.written == b""
