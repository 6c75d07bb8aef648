"""An SPRAM board end to end: the board top boots its weights from a model of the SPI flash, then
runs sequences sent by the host's own code through the simulated UART.

Outputs must equal golden bit for bit; a missing, foreign or corrupt image must leave the board
refusing to run (RUN answered "weights not loaded", IDENTIFY reporting the boot state, the host
saying what to do). The large models of the capacity issue run with ``-m slow``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import random_model
from gru_hw import flash_image as fi
from gru_hw import link
from gru_hw.boards.sim import WithFlash, run_board_sim
from gru_hw.boards.top import BoardTop
from gru_hw.errors import GruHwError
from gru_hw.golden import int_forward_q
from gru_hw.protocol import (CMD_IDENTIFY, CMD_RUN, ERR_NOT_LOADED, REPLY_ERROR, BoardDescriptor,
                             encode_frame, error_payload, model_hash, pack_ints)
from gru_hw.quant import choose_spec, quantize_model

DIVISOR = 4
TIMEOUT = 600


def _qm(seed=7, hidden=(4,), head=2, inputs=3, bits=(8, 10)):
    model = random_model(np.random.default_rng(seed), inputs, list(hidden), head=head)
    return quantize_model(model, choose_spec(model, *bits))


def _inputs(qm, n, t, seed):
    rng = np.random.default_rng(seed)
    f = qm.spec.x_fmt
    xq = rng.integers(f.min_int, f.max_int + 1, size=(n, t, qm.input_size))
    lengths = rng.integers(1, t + 1, size=n)
    lengths[0] = t
    return xq, lengths


def _top(qm, lanes=4, runtime_weights=False):
    return BoardTop(qm, lanes, None, divisor=DIVISOR, timeout_cycles=TIMEOUT, max_steps=8,
                    weight_memory="spram", runtime_weights=runtime_weights)


def _runs(client, xq, lengths):
    return np.stack([client.run_sequence(xq[n, :lengths[n]]).y for n in range(len(xq))])


def test_board_boots_from_flash_and_runs_exact():
    qm = _qm()
    top = _top(qm)
    xq, lengths = _inputs(qm, 4, 6, seed=1)
    gold = int_forward_q(qm, xq, lengths).y

    def host(port):
        c = link.BoardClient(port, expect=qm)
        d = c.identify()
        assert d.spram and d.boot_state == fi.BOOT_OK and d.model_hash == model_hash(qm)
        assert d.weights_crc == BoardDescriptor.for_model(
            qm, lanes=4, max_steps=8, clock_hz=1, weight_memory="spram").weights_crc
        return _runs(c, xq, lengths)

    board = WithFlash(top)
    # the image holds exactly the packed rows the core reads, nothing of the bias memory
    mm = top.core.memory_map
    assert fi.parse_image(board.image, word_bytes=mm.word_bytes, words=mm.slices * mm.weight_depth,
                          model_hash=model_hash(qm)) == mm.boot_image()
    y = run_board_sim(board, DIVISOR, host, timeout_cycles=20 * TIMEOUT)
    np.testing.assert_array_equal(y, gold)


def _refused_board(qm, image: bytes, state: int, what: str):
    """Boot ``image``; the board must refuse RUN and report ``state``; the host says ``what``."""
    xq, _ = _inputs(qm, 1, 3, seed=2)

    def host(port):
        raw = link.BoardClient(port)
        d = raw.identify_raw()
        for _ in range(200):
            if d.boot_state != fi.BOOT_LOADING:
                break
            d = raw.identify_raw()
        assert d.spram and d.boot_state == state
        frame = encode_frame(CMD_RUN, pack_ints(xq[0], d.x_bytes))
        port.write(frame)
        code, payload = link.read_frame(port)
        assert code == REPLY_ERROR and payload == error_payload(ERR_NOT_LOADED, CMD_RUN)
        with pytest.raises(GruHwError, match=what):
            link.BoardClient(port, expect=qm).identify()
        # IDENTIFY itself is answered
        port.write(encode_frame(CMD_IDENTIFY))
        code, _ = link.read_frame(port)
        assert code == CMD_IDENTIFY | 0x80
        return True

    assert run_board_sim(WithFlash(_top(qm), image), DIVISOR, host,
                         timeout_cycles=20 * TIMEOUT)


def test_corrupt_image_is_refused():
    qm = _qm()
    image = bytearray(_top(qm).link.flash_image())
    image[fi.HEADER_BYTES + 3] ^= 0x04  # one weight bit
    _refused_board(qm, bytes(image), fi.BOOT_CORRUPT, r"did not load .*corrupt")


def test_missing_image_is_refused():
    qm = _qm()
    _refused_board(qm, b"\xff" * 64, fi.BOOT_MISSING, r"did not load .*no weight image")


def test_image_of_another_model_is_refused():
    qm, other = _qm(), _qm(seed=8)
    image = _top(other).link.flash_image()  # same shape and formats' sizes, other weights
    _refused_board(qm, image, fi.BOOT_MISMATCH, r"did not load .*another build")


def test_runtime_weights_on_spram_board():
    """A run-time-weights SPRAM board boots the build's model from flash, then takes another
    model's weights over the UART (the same write path) and computes it exactly."""
    qm = _qm()
    qb = quantize_model(random_model(np.random.default_rng(21), 3, [4], head=2), qm.spec)
    xq, lengths = _inputs(qm, 3, 5, seed=4)
    gold_a, gold_b = (int_forward_q(q, xq, lengths).y for q in (qm, qb))
    assert not np.array_equal(gold_a, gold_b)

    def host(port):
        ya = _runs(link.BoardClient(port, expect=qm), xq, lengths)
        cb = link.BoardClient(port, expect=qb, loading=True)
        cb.load_weights(qb)
        return ya, _runs(cb, xq, lengths)

    ya, yb = run_board_sim(WithFlash(_top(qm, lanes=3, runtime_weights=True)), DIVISOR, host,
                           timeout_cycles=20 * TIMEOUT)
    np.testing.assert_array_equal(ya, gold_a)
    np.testing.assert_array_equal(yb, gold_b)


# ---- the capacity issue's models (trained by bench/models.py) --------------------------------
MODELS = Path(os.environ.get("GRU_HW_BENCH_MODELS", "build/models"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["h128", "h96x2"])
def test_large_model_boots_and_runs_exact(name):
    """12 -> 128 and 12 -> 96 -> 96 (+ head) at 8/8 bits, 8 lanes, on the iCEBreaker's core:
    boot from flash, then the first test sequences through the UART, exact."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from models import ensure_models

    from gru_hw.golden import quantize_inputs
    from gru_hw.importers import load_model
    from gru_hw.io import load_inputs

    path = ensure_models(MODELS)[name]
    model = load_model(path)
    x_cal, l_cal = load_inputs(MODELS / f"{name}_train.npz", model.input_size)
    cal = x_cal[np.arange(x_cal.shape[1])[None, :] < l_cal[:, None]]
    spec = choose_spec(model, weight_bits=8, act_bits=8, calibration=cal)
    qm = quantize_model(model, spec)
    x, lengths = load_inputs(MODELS / f"{name}_test.npz", model.input_size)
    xq, _ = quantize_inputs(spec, x[:2])
    lengths = lengths[:2]
    gold = int_forward_q(qm, xq, lengths).y
    # the iCEBreaker's core (profile "seq"), its SPRAM as the Amaranth model
    top = BoardTop(qm, 8, None, divisor=DIVISOR, timeout_cycles=TIMEOUT, weight_memory="spram",
                   profile="seq")
    assert top.core.schedule.cycles_per_step <= 1.05 * -(-top.core.schedule.macs_per_step // 8)

    def host(port):
        # the simulated UART is fast (divisor 4): poll IDENTIFY through the whole boot
        return _runs(link.BoardClient(port, expect=qm, boot_polls=10_000), xq, lengths)

    y = run_board_sim(WithFlash(top), DIVISOR, host, timeout_cycles=5_000_000,
                      max_cycles=200_000_000)
    np.testing.assert_array_equal(y, gold)
