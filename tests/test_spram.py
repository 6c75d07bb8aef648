"""Weights in iCE40 SPRAM: packed rows, loaded through the weight port, exact against golden.

The core's SPRAM starts empty (the cells have no initial contents): every run loads the packed
rows first, as a board's flash loader does. Amaranth's simulator runs an equivalent Amaranth
memory; Verilator and Icarus run the SB_SPRAM256KA cells with Yosys's own model.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_model
from gru_hw.amaranth_sim import simulate
from gru_hw.config import CoreConfig
from gru_hw.errors import GruHwError
from gru_hw.golden import int_forward_q
from gru_hw.memory_map import SPRAM_DEPTH
from gru_hw.quant import choose_spec, quantize_model
from gru_hw.simulate import rtl_run
from gru_hw.sim.runner import SIMULATORS
from gru_hw.sim.testing import build_root, require_tool


def _model(seed, hidden, head, reset_after, weight_bits=8, act_bits=10, inputs=3):
    rng = np.random.default_rng(seed)
    m = random_model(rng, inputs, hidden, reset_after=reset_after, head=head)
    qm = quantize_model(m, choose_spec(m, weight_bits, act_bits))
    f = qm.spec.x_fmt
    xq = rng.integers(f.min_int, f.max_int + 1, (3, 5, inputs))
    lengths = np.array([5, 3, 4])
    return rng, qm, xq, lengths


def test_packed_rows_hold_every_lane_word():
    _, qm, _, _ = _model(0, [7], 3, True, weight_bits=6)
    bram = CoreConfig(qm, 5).memory_map
    spram = CoreConfig(qm, 5, weight_memory="spram").memory_map
    assert spram.row_width == 5 * spram.weight_width == 30
    assert spram.acc_width == bram.acc_width and spram.bias_words == bram.bias_words
    slices = [r for r in spram.regions() if r.name.startswith("weights")]
    assert [r.name for r in slices] == ["weights0", "weights1"] and spram.slices == 2
    assert spram.data_width == 16  # a fixed build writes 16-bit slices only
    step = 1 << spram.offset_bits
    assert [r.base for r in slices] == [0, step] and spram.bias_region == 2
    ww = spram.weight_width
    for i in range(bram.weight_depth):
        row = sum((slices[k].words[i] & 0xFFFF) << (16 * k) for k in range(2))
        for p in range(5):
            w = (row >> (p * ww)) & ((1 << ww) - 1)
            w -= (1 << ww) if w >> (ww - 1) else 0
            assert w == bram.lane_words[p][i]
    assert spram.spram_shape == (2, 1) and spram.spram_blocks == 2
    assert [r.name for r in spram.regions()] == ["weights0", "weights1", "bias"]
    assert [r.name for r in spram.boot_regions()] == ["weights0", "weights1"]
    assert spram.load_image() == [(r.base + i, w) for r in slices for i, w in enumerate(r.words)]
    assert spram.boot_image() == [w for r in slices for w in r.words]
    assert bram.load_image() == []  # the bitstream holds a block-RAM build's weights
    rw = CoreConfig(qm, 5, weight_memory="spram", runtime_weights=True).memory_map
    assert rw.data_width == max(16, rw.bias_width)


def test_spram_shape_counts_banks():
    _, qm, _, _ = _model(0, [7], 3, True)
    mm = CoreConfig(qm, 4, weight_memory="spram").memory_map
    assert mm.weight_depth < SPRAM_DEPTH and mm.spram_shape == (2, 1)


def test_unknown_weight_memory_is_refused():
    _, qm, _, _ = _model(0, [4], None, True)
    with pytest.raises(GruHwError, match="weight memory"):
        CoreConfig(qm, 2, weight_memory="flash")


@pytest.mark.parametrize("seed,hidden,head,lanes,reset_after", [
    (1, [6], 3, 4, True),
    (2, [5, 4], 2, 3, False),
    (3, [4, 3], None, 2, True),
])
@pytest.mark.parametrize("runtime_weights", [False, True])
def test_spram_core_is_exact_in_amaranth(seed, hidden, head, lanes, reset_after, runtime_weights):
    rng, qm, xq, lengths = _model(seed, hidden, head, reset_after)
    g = int_forward_q(qm, xq, lengths, sequence=True)
    vp = list(rng.random(13) < 0.7)
    rp = list(rng.random(11) < 0.6)
    wp = list(rng.random(7) < 0.5)
    vp[0] = rp[0] = wp[0] = True
    y, h, cycles = simulate(qm, xq, lengths, lanes=lanes, sequence=True, weight_memory="spram",
                            runtime_weights=runtime_weights, valid_pattern=vp, ready_pattern=rp,
                            weight_pattern=wp)
    assert np.array_equal(y, g.y) and np.array_equal(h, g.h)


def test_spram_needs_its_load():
    """The packed rows are really read from the (empty at power-up) SPRAM: a core loaded with
    another model of the same shape and spec computes that model."""
    rng, qa, xq, lengths = _model(4, [5], 2, True)
    m_b = random_model(rng, 3, [5], reset_after=True, head=2)
    qb = quantize_model(m_b, qa.spec)
    ga, gb = (int_forward_q(q, xq, lengths) for q in (qa, qb))
    assert not np.array_equal(ga.y, gb.y)
    y, _, _ = simulate(qa, xq, lengths, lanes=3, weight_memory="spram", runtime_weights=True,
                       init_weights=False, load=qb)
    assert np.array_equal(y, gb.y)


@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("runtime_weights", [False, True])
def test_spram_cells_are_exact(simulator, runtime_weights, tmp_path, request,
                               tmp_path_factory):
    """The SB_SPRAM256KA cells under Yosys's model, with backpressure and idle input."""
    require_tool(simulator)
    _, qm, xq, lengths = _model(5, [6, 5], 3, False, weight_bits=9)
    g = int_forward_q(qm, xq, lengths, sequence=True)
    res = rtl_run(qm, xq, lengths, simulator=simulator, lanes=4, sequence=True,
                  build_root=build_root(request.config, tmp_path_factory), test_dir=tmp_path, weight_memory="spram",
                  runtime_weights=runtime_weights, golden=g,
                  options={"backpressure": [0, 1, 0, 0, 2], "idle": [1, 0, 0, 3]})
    assert res["match"], res["mismatch"]
    assert np.array_equal(res["y"], g.y) and np.array_equal(res["h"], g.h)
