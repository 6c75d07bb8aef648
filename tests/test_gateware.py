"""GRUCore against the bit-exact golden model, and its cycle counts against the schedule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gru_hw.amaranth_sim import simulate
from gru_hw.errors import GruHwError
from gru_hw.fixed import Overflow, Rounding
from gru_hw.config import CoreConfig
from gru_hw.gateware import GRUCore
from gru_hw.golden import int_forward_q, quantize_inputs
from gru_hw.model import DenseHead, GRULayer, GRUModel
from gru_hw.quant import PointMode, choose_spec, quantize_model
from gru_hw.schedule import Schedule


def random_model(rng, inputs, hidden, reset_after, head, scale=1.0):
    layers, n_in = [], inputs
    for h in hidden:
        layers.append(GRULayer(rng.normal(0, scale, (3 * h, n_in)), rng.normal(0, scale, (3 * h, h)),
                               rng.normal(0, 0.5 * scale, 3 * h), rng.normal(0, 0.5 * scale, 3 * h)))
        n_in = h
    hd = DenseHead(rng.normal(0, scale, (head, n_in)), rng.normal(0, 0.3, head)) if head else None
    return GRUModel(tuple(layers), reset_after, hd)


def random_case(seed, inputs, hidden, reset_after, head, weight_bits, act_bits, random_modes):
    rng = np.random.default_rng(seed)
    model = random_model(rng, inputs, hidden, reset_after, head, scale=float(rng.choice([0.3, 1, 3])))
    spec = choose_spec(model, weight_bits, act_bits)
    if random_modes:
        for pt in spec.point_names():
            if pt != "x":
                spec = spec.with_point(pt, PointMode(Rounding(rng.choice([r.value for r in Rounding])),
                                                     Overflow(rng.choice([o.value for o in Overflow]))))
    return rng, quantize_model(model, spec)


def check(qm, rng, n_seq, t_max, lanes, sequence, keep_state, backpressure, profile="dsp"):
    x = rng.normal(0, 2.5, (n_seq, t_max, qm.input_size))
    xq, _ = quantize_inputs(qm.spec, x)
    lengths = rng.integers(1, t_max + 1, n_seq)
    vp = rp = None
    if backpressure:
        vp = list(rng.random(int(rng.integers(5, 60))) < rng.uniform(0.2, 0.9))
        rp = list(rng.random(int(rng.integers(5, 60))) < rng.uniform(0.2, 0.9))
        vp[0] = rp[0] = True
    y, h, cycles = simulate(qm, xq, lengths, lanes=lanes, sequence=sequence, keep_state=keep_state,
                            valid_pattern=vp, ready_pattern=rp, profile=profile)
    gold = int_forward_q(qm, xq, lengths, sequence=sequence, keep_state=keep_state)
    np.testing.assert_array_equal(y, gold.y)
    if sequence:
        np.testing.assert_array_equal(h, gold.h)
    if not backpressure:
        sch = Schedule(qm, lanes, profile=profile)
        assert list(cycles) == sch.run(lengths)
        assert cycles[0] == sch.cycles_per_sequence(int(lengths[0]))


@st.composite
def cases(draw, max_in, max_hidden, max_layers, max_steps):
    layers = draw(st.integers(1, max_layers))
    hidden = [draw(st.integers(1, max_hidden)) for _ in range(layers)]
    return dict(
        seed=draw(st.integers(0, 2**31)),
        inputs=draw(st.integers(1, max_in)),
        hidden=hidden,
        reset_after=draw(st.booleans()),
        head=draw(st.one_of(st.none(), st.integers(1, 5))),
        weight_bits=draw(st.integers(4, 16)),
        act_bits=draw(st.integers(8, 16)),
        random_modes=draw(st.booleans()),
        lanes=draw(st.integers(1, 3 * max(hidden))),
        sequence=draw(st.booleans()),
        keep_state=draw(st.booleans()),
        backpressure=draw(st.booleans()),
        n_seq=draw(st.integers(1, 3)),
        t_max=draw(st.integers(1, max_steps)),
        profile=draw(st.sampled_from(["dsp", "lut", "seq"])),
    )


def run_case(case):
    rng, qm = random_case(case["seed"], case["inputs"], case["hidden"], case["reset_after"],
                          case["head"], case["weight_bits"], case["act_bits"], case["random_modes"])
    check(qm, rng, case["n_seq"], case["t_max"], case["lanes"], case["sequence"],
          case["keep_state"], case["backpressure"], case["profile"])


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases(max_in=5, max_hidden=5, max_layers=2, max_steps=3))
def test_core_matches_golden_small(case):
    run_case(case)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases(max_in=40, max_hidden=48, max_layers=3, max_steps=5))
def test_core_matches_golden_sweep(case):
    # keep the big models cheap enough: many lanes for big ones
    case["lanes"] = max(case["lanes"], (3 * max(case["hidden"]) * (case["inputs"] + 48)) // 600)
    case["lanes"] = min(case["lanes"], 3 * max(case["hidden"]))
    run_case(case)


def _variants():
    """Every (variant, stack, sequence) combination; half of them (a Latin square covering each
    value of each parameter twice) run by default, the rest with -m slow."""
    for reset_after in (True, False):
        for layers, head in (([4], None), ([3, 4], 3)):
            for sequence in (False, True):
                quick = (reset_after + (head is not None) + sequence) % 2 == 0
                yield pytest.param(reset_after, layers, head, sequence,
                                   marks=() if quick else pytest.mark.slow)


@pytest.mark.parametrize("reset_after,layers,head,sequence", list(_variants()))
def test_core_variants_exact_cycles(reset_after, layers, head, sequence):
    rng, qm = random_case(7, 3, layers, reset_after, head, 10, 12, random_modes=True)
    for lanes in (1, 5, 3 * max(layers)):
        check(qm, rng, 3, 4, lanes, sequence, keep_state=False, backpressure=False)


@pytest.mark.parametrize("reset_after", [True, False])
def test_core_backpressure_keep_state(reset_after):
    rng, qm = random_case(11, 2, [3, 2], reset_after, 2, 8, 10, random_modes=False)
    for lanes in (2, 9):
        check(qm, rng, 4, 3, lanes, sequence=True, keep_state=True, backpressure=True)


def test_core_lut_tail():
    rng, qm = random_case(5, 3, [4], False, 2, 12, 12, random_modes=True)
    check(qm, rng, 2, 3, 4, sequence=True, keep_state=False, backpressure=False, profile="lut")
    rng, qm = random_case(6, 3, [3], True, None, 12, 12, random_modes=True)
    check(qm, rng, 2, 3, 4, sequence=False, keep_state=True, backpressure=True, profile="lut")


@pytest.mark.parametrize("reset_after", [True, False])
def test_core_seq_tail(reset_after):
    """profile="seq": one sequential logic multiplier per product, one emitted row per 4 cycles."""
    rng, qm = random_case(8, 3, [4, 3], reset_after, 2, 12, 12, random_modes=True)
    for lanes in (1, 5, 12):
        check(qm, rng, 2, 3, lanes, sequence=True, keep_state=False, backpressure=False,
              profile="seq")
    check(qm, rng, 3, 3, 3, sequence=False, keep_state=True, backpressure=True, profile="seq")


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_core_ports_and_properties():
    rng, qm = random_case(1, 3, [4], True, 2, 8, 10, random_modes=False)
    core = GRUCore(qm, 4)
    assert core.out_width == qm.spec.out_fmt.width
    assert core.i_layout.size == 3 * qm.spec.x_fmt.width + 2
    assert core.o_layout.size == 2 * core.out_width + 1
    assert core.cycles_per_step == core.schedule.cycles_per_step
    seq = GRUCore(qm, 4, sequence=True)
    assert seq.out_width == qm.spec.h_fmt.width
    assert "y_head" in dict(seq.o_layout)


def test_core_argument_errors():
    rng, qm = random_case(1, 3, [32], True, None, 8, 10, random_modes=False)
    with pytest.raises(GruHwError, match=r"^lanes must be in 1\.\.3H = 96, got 0$"):
        GRUCore(qm, 0)
    with pytest.raises(GruHwError, match=r"^lanes must be in 1\.\.3H = 96, got 97$"):
        GRUCore(qm, 97)
    with pytest.raises(GruHwError, match=r"^core profile must be one of \['dsp', 'lut', 'seq'\], got 'x'$"):
        GRUCore(qm, 4, profile="x")
    with pytest.raises(TypeError, match="either a CoreConfig"):
        GRUCore(CoreConfig(qm, 4), 4)
