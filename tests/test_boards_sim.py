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
    assert raw[:4] == b"GRUH" and len(raw) == 39
    assert link.BoardDescriptor.from_bytes(raw) == d
    assert struct.unpack_from("<H", raw, 13)[0] == 3  # input size after magic, version, hash


def test_run_command_through_simulated_board(qm, tmp_path, monkeypatch, capsys):
    """`gru-hw run --check` (gru_hw.board.run_inputs) against the simulated board."""
    import argparse
    import json

    from gru_hw import board
    from gru_hw.fixed import to_float

    model_path = tmp_path / "model.npz"
    q = qm  # write a float model whose quantization is exactly qm
    arrays = {}
    for k, layer in enumerate(q.layers):
        arrays[f"w_ih_{k}"] = to_float(layer.w_ih, q.spec.layers[k].w_ih_fmt)
        arrays[f"w_hh_{k}"] = to_float(layer.w_hh, q.spec.layers[k].w_hh_fmt)
        arrays[f"b_ih_{k}"] = to_float(layer.b_ih, q.spec.b_ih_fmt(k))
        arrays[f"b_hh_{k}"] = to_float(layer.b_hh, q.spec.b_hh_fmt(k))
    arrays["head_w"] = to_float(q.head_w, q.spec.head.w_fmt)
    arrays["head_b"] = to_float(q.head_b, q.spec.head_b_fmt())
    np.savez(model_path, **arrays)
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
