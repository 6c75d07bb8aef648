"""The golden models: integer model against a slow exact reference, integer vs float bounds,
lengths / sequence / keep-state semantics."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import random_model
from gru_hw.errors import GruHwError
from gru_hw.fixed import Overflow, QFormat, Rounding, quantize
from gru_hw.golden import float_forward, int_forward, int_forward_q, quantize_inputs
from gru_hw.quant import PointMode, choose_spec, quantize_model
from reference import slow_layer_step


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    input_size=st.integers(1, 5),
    hidden=st.lists(st.integers(1, 4), min_size=1, max_size=2),
    reset_after=st.booleans(),
    weight_bits=st.integers(4, 16),
    act_bits=st.integers(8, 14),
    modes=st.lists(st.tuples(st.sampled_from(Rounding), st.sampled_from(Overflow)), min_size=12, max_size=12),
    scale=st.sampled_from([0.5, 2.0, 6.0]),
)
def test_integer_model_matches_exact_reference(seed, input_size, hidden, reset_after, weight_bits,
                                               act_bits, modes, scale):
    """Every requantization point, every rounding and overflow mode, against exact rationals."""
    rng = np.random.default_rng(seed)
    model = random_model(rng, input_size, hidden, reset_after=reset_after, scale=scale)
    spec = choose_spec(model, weight_bits=weight_bits, act_bits=act_bits)
    points = [p for p in spec.point_names() if p != "x"]
    for name, (rounding, overflow) in zip(points, modes):
        spec = spec.with_point(name, PointMode(rounding, overflow))
    qm = quantize_model(model, spec)
    steps = 4
    x = rng.normal(0, 3 * scale, (1, steps, input_size))
    xq, _ = quantize_inputs(spec, x)
    got = int_forward_q(qm, xq, np.array([steps]), sequence=True)
    sats: dict[str, int] = {}
    hs = [[0] * h for h in hidden]
    for t in range(steps):
        inp = [int(v) for v in xq[0, t]]
        for k in range(len(hidden)):
            hs[k] = slow_layer_step(qm, k, inp, hs[k], sats)
            inp = hs[k]
        assert got.h[0, t].tolist() == hs[-1], f"step {t}"
    assert got.y[0].tolist() == hs[-1]
    assert {k: v for k, v in got.saturations.items() if v} == {k: v for k, v in sats.items() if v}


def test_head_matches_exact_reference(rng):
    model = random_model(rng, 3, [5], head=4)
    spec = choose_spec(model, weight_bits=9, act_bits=11)
    qm = quantize_model(model, spec)
    x = rng.normal(0, 1, (6, 7, 3))
    res = int_forward_q(qm, quantize_inputs(spec, x)[0], np.full(6, 7), sequence=True)
    hq = int_forward_q(quantize_model(_no_head(model), _no_head_spec(spec)),
                       quantize_inputs(spec, x)[0], np.full(6, 7)).y
    acc_frac = spec.h_fmt.frac_bits + spec.head.w_fmt.frac_bits
    for n in range(6):
        for o in range(4):
            exact = sum(Fraction(int(qm.head_w[o, j]) * int(hq[n, j])) for j in range(5)) + int(qm.head_b[o])
            val = exact / 2**acc_frac
            want = int(np.floor(val * 2**spec.head.out_fmt.frac_bits + Fraction(1, 2)))
            assert res.y[n, o] == want


def _no_head(model):
    from gru_hw.model import GRUModel

    return GRUModel(model.layers, model.reset_after, None)


def _no_head_spec(spec):
    from dataclasses import replace

    return replace(spec, head=None, points=tuple(p for p in spec.points if p[0] != "head"))


def one_step_bound(model, spec, qm, x, h):
    """A per-unit bound on |one integer step - one float step| from the same (representable) state.

    Error sources: weight and bias rounding (half an LSB each), the input rounding (half an LSB of
    x_fmt), each requantization point (half an LSB of its format), and the PWL units' exhaustively
    measured max error. Sigmoid is 1/4-Lipschitz, tanh 1-Lipschitz; products add |a| e_b + |b| e_a.
    """
    layer = model.layers[0]
    lf = spec.layers[0]
    H = layer.hidden_size
    e_w_ih = lf.w_ih_fmt.lsb / 2
    e_w_hh = lf.w_hh_fmt.lsb / 2
    e_x = spec.x_fmt.lsb / 2
    ax, ah = np.abs(x), np.abs(h)
    # acc error of each row: (W + dW)(x + dx) - W x, plus bias rounding
    e_acc_x = (np.abs(layer.w_ih) + e_w_ih) @ (np.full_like(ax, e_x)) + e_w_ih * ax.sum() \
        + spec.b_ih_fmt(0).lsb / 2
    e_acc_h = e_w_hh * ah.sum() + spec.b_hh_fmt(0).lsb / 2
    e_pre = spec.preact_fmt.lsb / 2
    eps_s = spec.sigmoid_table().max_error
    eps_t = spec.tanh_table().max_error
    e_r = (e_acc_x[:H] + e_acc_h + e_pre) / 4 + eps_s
    e_z = (e_acc_x[H:2 * H] + e_acc_h + e_pre) / 4 + eps_s
    if model.reset_after:
        hn = layer.w_hh[2 * H:] @ h + layer.b_hh[2 * H:]
        e_hn = e_acc_h + lf.hn_fmt.lsb / 2
        e_prod = e_r * (np.abs(hn) + e_hn) + e_hn
    else:
        e_rh = e_r * ah + spec.h_fmt.lsb / 2
        e_prod = (np.abs(layer.w_hh[2 * H:]) + e_w_hh) @ e_rh + e_w_hh * ah.sum() + spec.b_hh_fmt(0).lsb / 2
    e_n = e_acc_x[2 * H:] + e_prod + e_pre + eps_t
    # h' = n + z (h - n): |dh'| <= |dn| (1 + |z|) + |dz| |h - n| (+ rounding); |h - n| <= 2
    return e_n * 2 + e_z * 2 + spec.h_fmt.lsb / 2


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("bits", [(8, 8), (12, 12), (16, 16)])
def test_integer_vs_float_one_step_within_derived_bound(rng, reset_after, bits):
    model = random_model(rng, 6, 10, reset_after=reset_after)
    spec = choose_spec(model, weight_bits=bits[0], act_bits=bits[1])
    qm = quantize_model(model, spec)
    worst = 0.0
    for _ in range(50):
        x = rng.uniform(-3, 3, 6)
        hq, _ = quantize(rng.uniform(-0.95, 0.95, 10), spec.h_fmt)
        h = np.ldexp(hq.astype(float), -spec.h_fmt.frac_bits)
        from gru_hw.golden import _float_batch, int_step

        f_next = _float_batch(model, x[None, None, :], np.array([1]), False, [h[None, :]])[2][0][0]
        xq, _ = quantize(x, spec.x_fmt)
        i_next = int_step(qm, 0, xq[None, :], hq[None, :])[0]
        err = np.abs(np.ldexp(i_next.astype(float), -spec.h_fmt.frac_bits) - f_next)
        bound = one_step_bound(model, spec, qm, x, h)
        assert np.all(err <= bound), (err.max(), bound.min())
        worst = max(worst, float((err / bound).max()))
    assert worst > 0.0  # the bound is not vacuous: some error exists


def test_sixteen_bit_sequence_close_to_float(rng):
    model = random_model(rng, 8, [16, 16], head=5)
    spec = choose_spec(model, 16, 16)
    qm = quantize_model(model, spec)
    x = rng.normal(0, 1, (16, 30, 8))
    i = int_forward(qm, x, sequence=True)
    f = float_forward(model, x, sequence=True)
    assert np.abs(i.h - f.h).max() < 0.01
    assert np.abs(i.y - f.y).max() < 0.01


def test_lengths_equal_truncation(rng):
    model = random_model(rng, 3, 6, head=2)
    qm = quantize_model(model, choose_spec(model, 10, 10))
    x = rng.normal(0, 1, (5, 9, 3))
    lengths = np.array([9, 1, 4, 7, 2])
    # The integer model is exact; the float one may differ in the last bit between batch sizes.
    for fwd, tol in ((lambda xx, ll=None: int_forward(qm, xx, ll, sequence=True), 0.0),
                     (lambda xx, ll=None: float_forward(model, xx, ll, sequence=True), 1e-12)):
        full = fwd(x, lengths)
        for n, length in enumerate(lengths):
            alone = fwd(x[n:n + 1, :length])
            assert np.abs(full.y[n] - alone.y[0]).max() <= tol
            assert np.abs(full.h[n, :length] - alone.h[0]).max() <= tol
            assert not np.any(full.h[n, length:])


def test_keep_state_equals_unbroken_sequence(rng):
    model = random_model(rng, 4, [5, 3], reset_after=False)
    qm = quantize_model(model, choose_spec(model, 12, 12))
    x = rng.normal(0, 1, (1, 20, 4))
    chunks = np.zeros((3, 8, 4))
    chunks[0, :8], chunks[1, :7], chunks[2, :5] = x[0, :8], x[0, 8:15], x[0, 15:20]
    lengths = np.array([8, 7, 5])
    for fwd, tol in ((lambda *a, **k: int_forward(qm, *a, **k), 0.0),
                     (lambda *a, **k: float_forward(model, *a, **k), 1e-12)):
        whole = fwd(x, sequence=True)
        parts = fwd(chunks, lengths, sequence=True, keep_state=True)
        assert np.abs(parts.y[2] - whole.y[0]).max() <= tol
        glued = np.concatenate([parts.h[0, :8], parts.h[1, :7], parts.h[2, :5]])
        assert np.abs(glued - whole.h[0]).max() <= tol
        # without keep_state the second chunk starts from zero and differs
        assert not np.array_equal(fwd(chunks, lengths).y[1], parts.y[1])


def test_saturation_counted_where_range_is_lost(rng):
    model = random_model(rng, 2, 3)
    spec = choose_spec(model, 12, 12)  # x in Q4.8: range ±8
    qm = quantize_model(model, spec)
    x = np.zeros((1, 3, 2))
    x[0, 1, 0] = 100.0
    res = int_forward(qm, x)
    assert res.saturations["x"] == 1


def test_input_errors(rng):
    model = random_model(rng, 2, 3)
    with pytest.raises(GruHwError, match="features per step, the model takes 2"):
        float_forward(model, np.zeros((1, 4, 3)))
    with pytest.raises(GruHwError, match="NaN or infinite"):
        float_forward(model, np.full((1, 4, 2), np.nan))
    with pytest.raises(GruHwError, match="lengths must be within 1..4"):
        float_forward(model, np.zeros((2, 4, 2)), np.array([0, 4]))
    # NaN past a sequence's length is ignored
    x = np.zeros((1, 4, 2))
    x[0, 3] = np.nan
    assert np.all(np.isfinite(float_forward(model, x, np.array([3])).y))


@pytest.mark.parametrize("keep_state", [False, True])
def test_progress_callback(rng, keep_state):
    """progress(done, total) counts steps (sequences with keep_state), ends at total, and does
    not change the results."""
    model = random_model(rng, 3, 4, head=2)
    qm = quantize_model(model, choose_spec(model, 10, 10))
    x = rng.normal(0, 1, (5, 7, 3))
    lengths = np.array([7, 3, 5, 1, 6])
    total = 5 if keep_state else 7
    for run, ref in ((lambda p: int_forward(qm, x, lengths, keep_state=keep_state, progress=p),
                      int_forward(qm, x, lengths, keep_state=keep_state)),
                     (lambda p: float_forward(model, x, lengths, keep_state=keep_state, progress=p),
                      float_forward(model, x, lengths, keep_state=keep_state))):
        calls = []
        res = run(lambda done, tot: calls.append((done, tot)))
        assert np.array_equal(res.y, ref.y)
        assert calls[0] == (0, total) and calls[-1] == (total, total)
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)
