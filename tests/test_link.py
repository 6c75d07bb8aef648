"""Host side of the UART link (gru_hw.link): reading frames, client error handling."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gru_hw import link
from gru_hw.errors import GruHwError
from gru_hw.protocol import (
    CMD_IDENTIFY, CMD_RESET_STATE, CMD_RUN, CMD_RUN_KEEP, ERR_CRC, ERR_STREAM, REPLY_ERROR,
    REPLY_OK, SYNC, BoardDescriptor, LinkError, encode_frame, error_payload, pack_ints,
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


def test_client_names_streams(qm):
    """S > 1 boards: the stream id goes before the steps; RESET_STATE of one stream or all; a
    stream the board lacks is refused before anything is sent, naming the stream."""
    one = BoardDescriptor.for_model(qm, lanes=1, max_steps=4, clock_hz=12_000_000)
    two = replace(one, streams=2)
    xq = np.array([[1, 2, 3], [-1, -2, -3]])
    y = np.array([5, -7])
    reply = encode_frame(CMD_RUN_KEEP | REPLY_OK, two.result_payload(y, 99))
    c = link.BoardClient(BytesPort(reply + encode_frame(CMD_RESET_STATE | REPLY_OK)
                                   + encode_frame(CMD_RESET_STATE | REPLY_OK)))
    c.descriptor = two
    r = c.run_sequence(xq, keep_state=True, stream=1)
    assert r.y.tolist() == y.tolist() and r.cycles == 99
    c.reset_state(stream=1)
    c.reset_state()
    assert c.port.written == (encode_frame(CMD_RUN_KEEP, b"\x01" + pack_ints(xq, two.x_bytes))
                              + encode_frame(CMD_RESET_STATE, b"\x01")
                              + encode_frame(CMD_RESET_STATE))
    c.port.written = b""
    with pytest.raises(GruHwError, match="stream 2 is out of range: the board serves streams 0..1"):
        c.run_sequence(xq, stream=2)
    with pytest.raises(GruHwError, match="stream 5 is out of range"):
        c.reset_state(stream=5)
    with pytest.raises(GruHwError, match="stream 3 is out of range"):
        c.run(np.zeros((3, 2, 3)), stream=[0, 1, 3])
    with pytest.raises(GruHwError, match="2 stream ids for 3 sequences"):
        c.run(np.zeros((3, 2, 3)), stream=[0, 1])
    c.descriptor = one
    with pytest.raises(GruHwError, match="stream 1 is out of range: .*only stream 0"):
        c.run_sequence(xq, stream=1)
    assert c.port.written == b""
    # a board's refusal of a stream id reads as such
    err = encode_frame(REPLY_ERROR, error_payload(ERR_STREAM, CMD_RUN_KEEP))
    with pytest.raises(link.BoardRefused, match="command 0x05: stream id out of range"):
        link.BoardClient(BytesPort(err)).request(CMD_RUN_KEEP, b"\x07\x00")


def test_client_run_deals_sequences_to_streams(qm):
    """run(stream=ids) sends each sequence on its stream, in order; results say the stream."""
    two = replace(BoardDescriptor.for_model(qm, lanes=1, max_steps=4, clock_hz=12_000_000),
                  streams=2)
    replies = b"".join(encode_frame(CMD_RUN_KEEP | REPLY_OK, two.result_payload([n, -n], n))
                       for n in range(3))
    port = BytesPort(replies)
    c = link.BoardClient(port)
    c.descriptor = two
    res = c.run(np.zeros((3, 2, 3)), np.array([2, 1, 2]), keep_state=True, stream=[1, 0, 1])
    assert res["stream"].tolist() == [1, 0, 1] and res["cycles"].tolist() == [0, 1, 2]
    assert res["yq"].tolist() == [[0, 0], [1, -1], [2, -2]]
    sent = port.written
    frames = []
    while sent:
        n = 1 + 3 + int.from_bytes(sent[2:4], "little") + 2
        frames.append(sent[:n])
        sent = sent[n:]
    assert [f[4] for f in frames] == [1, 0, 1]  # the stream id, first in each payload
    assert [len(f) - 6 for f in frames] == [1 + 2 * two.step_bytes, 1 + two.step_bytes,
                                            1 + 2 * two.step_bytes]
