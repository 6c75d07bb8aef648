"""The generated core in RTL simulators (Verilator, Icarus), compared beat by beat with golden.

Builds are shared between tests through a folder keyed by content (see sim/testing.py): the
first Verilator build of a configuration takes tens of seconds, later runs a few seconds.
The default run covers the shipped classifier and a random two-layer reset_before model emitting
its hidden sequence under idle cycles, backpressure and a mid-stream reset, in both simulators;
``-m slow`` adds sweeps.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import random_model
from gru_hw.errors import GruHwError
from gru_hw.golden import check_inputs, int_forward_q, quantize_inputs
from gru_hw.quant import choose_spec, quantize_model
from gru_hw.simulate import rtl_run, run_simulation
from gru_hw.sim.runner import SIMULATORS
from gru_hw.sim.testing import build_root, require_tool

DATA = Path(__file__).resolve().parent.parent / "gru_hw" / "data"
STRESS = {"idle": [0, 0, 1, 0, 1], "backpressure": {"random": 0.4, "seed": 11}}


@pytest.fixture(scope="session")
def sim_root(request, tmp_path_factory) -> Path:
    return build_root(request.config, tmp_path_factory)


@pytest.fixture(scope="module")
def jv():
    """The shipped JapaneseVowels classifier, its quantized form and the test set."""
    from gru_hw.importers import load_model

    model = load_model(DATA / "japanese_vowels_gru.pt")
    spec = choose_spec(model)
    data = np.load(DATA / "japanese_vowels_test.npz")
    return model, spec, quantize_model(model, spec), data["x"], data["lengths"]


def _pick(lengths: np.ndarray, count: int, *, shortest: bool = False) -> np.ndarray:
    """Return indices of ``count`` sequences of varying length (evenly over the sorted lengths,
    or the shortest ones of distinct lengths)."""
    order = np.argsort(lengths, kind="stable")
    if shortest:  # the first sequence of each of the `count` shortest lengths
        _, first = np.unique(lengths[order], return_index=True)
        return np.sort(order[first[:count]])
    return np.sort(order[np.linspace(0, len(order) - 1, count).round().astype(int)])


def _quantized(model, spec, x, lengths):
    x, lengths = check_inputs(model, x, lengths)
    return quantize_inputs(spec, x)[0], lengths


def _expected_cycles(schedule: dict, lengths: np.ndarray) -> list[int]:
    """Cycles per sequence that spec.json's schedule promises (input always valid, output ready)."""
    values = schedule["cycles_per_sequence_values"]
    return [int(values["1"]) if t == 1 else
            schedule["sequence_overhead"] + schedule["cycles_per_step"] * int(t)
            for t in lengths]


# ---- (a) the shipped classifier, real sequences of varying length ------------------------------
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_classifier_bit_exact(simulator, jv, sim_root, tmp_path):
    require_tool(simulator)
    model, spec, qm, x, lengths = jv
    # Icarus runs this core at a few thousand cycles per second: three short sequences there.
    idx = _pick(lengths, 20) if simulator == "verilator" else _pick(lengths, 3, shortest=True)
    xq, ln = _quantized(model, spec, x[idx], lengths[idx])
    res = rtl_run(qm, xq, ln, simulator=simulator, lanes=8, build_root=sim_root,
                  test_dir=tmp_path)
    assert res["match"], res["mismatch"]
    golden = int_forward_q(qm, xq, ln)
    np.testing.assert_array_equal(res["y"], golden.y)
    assert len(set(ln.tolist())) >= 3
    assert res["cycles"].tolist() == _expected_cycles(res["spec_json"]["schedule"], ln)


# ---- (b) random two-layer reset_before model, full hidden sequence, stressed ---------------------
def _random_case(seed: int, *, head: int | None = 3, hidden=(6, 5), n: int = 5, t: int = 6):
    rng = np.random.default_rng(seed)
    model = random_model(rng, 4, list(hidden), reset_after=False, head=head)
    spec = choose_spec(model)
    x = rng.normal(0, 1.5, (n, t, 4))
    lengths = rng.integers(1, t + 1, n)
    lengths[0] = t
    xq, lengths = _quantized(model, spec, x, lengths)
    return quantize_model(model, spec), xq, lengths


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_reset_before_two_layers_sequence_stressed(simulator, sim_root, tmp_path):
    require_tool(simulator)
    qm, xq, lengths = _random_case(5)
    beats = int(lengths.sum())
    res = rtl_run(qm, xq, lengths, simulator=simulator, lanes=3, sequence=True,
                  build_root=sim_root, test_dir=tmp_path,
                  options={**STRESS, "reset_after_beats": beats // 2 + 1})
    assert res["match"], res["mismatch"]
    assert res["reset"]["after_beats"] == beats // 2 + 1
    golden = int_forward_q(qm, xq, lengths, sequence=True)
    np.testing.assert_array_equal(res["h"], golden.h)
    np.testing.assert_array_equal(res["y"], golden.y)
    assert res["beats_received"] == beats


def test_mismatch_message_and_waves_on_the_real_core_icarus(sim_root, tmp_path):
    # Icarus dumps from the same build; a traced Verilator build of the core takes long:
    # Verilator's waves on failure are tested on the stand-in and, for this core, in the slow set.
    simulator = "icarus"
    require_tool(simulator)
    qm, xq, lengths = _random_case(5)
    golden = int_forward_q(qm, xq, lengths, sequence=True)
    golden.h[1, 0, 2] += 1  # pretend golden says otherwise at sequence 1, step 0, index 2
    got = int(golden.h[1, 0, 2]) - 1
    res = rtl_run(qm, xq, lengths, simulator=simulator, lanes=3, sequence=True,
                  build_root=sim_root, test_dir=tmp_path, golden=golden)
    assert not res["match"]
    assert res["mismatch"].startswith(
        f"sequence 1, step 0, index 2: expected {got + 1}, got {got} (1 of 5 values differ")
    assert Path(res["waves"]).exists() and Path(res["waves"]).parent == tmp_path


# ---- run_simulation, the `gru-hw simulate` entry point -------------------------------------------
@pytest.mark.parametrize("simulator", [*SIMULATORS, "amaranth"])
def test_run_simulation_writes_outputs(simulator, jv, sim_root, tmp_path):
    require_tool(simulator)
    model, spec, qm, x, lengths = jv
    idx = _pick(lengths, 2, shortest=True)
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=x[idx], lengths=lengths[idx])
    out = tmp_path / "out.npz"
    res = run_simulation(model, spec, inputs, out, simulator=simulator, lanes=8,
                         build_dir=sim_root)
    assert res["match"], res["mismatch"]
    assert res["mismatch"] is None
    assert res["sequences"] == 2 and len(res["cycles"]) == 2
    assert res["cycles_mean"] == pytest.approx(np.mean(res["cycles"]))
    json.dumps(res)  # the CLI prints it with --json
    from gru_hw.golden import int_forward

    with np.load(out) as f:
        assert sorted(f.files) == ["cycles", "y"]
        np.testing.assert_array_equal(f["y"], int_forward(qm, x[idx], lengths[idx]).y)
        assert f["cycles"].tolist() == res["cycles"]


def test_run_simulation_sequence_and_waves_dir(sim_root, tmp_path):
    require_tool("icarus")
    rng = np.random.default_rng(5)  # the model of _random_case(5): its build is reused
    model = random_model(rng, 4, [6, 5], reset_after=False, head=3)
    spec = choose_spec(model)
    x = rng.normal(0, 1.5, (3, 4, 4))
    np.savez(tmp_path / "in.npz", x=x)
    waves = tmp_path / "waves"
    res = run_simulation(model, spec, tmp_path / "in.npz", tmp_path / "out.npz",
                         simulator="icarus", lanes=3, sequence=True, keep_state=True,
                         waves=waves, build_dir=sim_root)
    assert res["match"], res["mismatch"]
    assert res["waves"] == str(waves / "waves.vcd") and (waves / "waves.vcd").stat().st_size
    from gru_hw.golden import int_forward

    ref = int_forward(quantize_model(model, spec), x, sequence=True, keep_state=True)
    with np.load(tmp_path / "out.npz") as f:
        np.testing.assert_array_equal(f["h"], ref.h)
        np.testing.assert_array_equal(f["y"], ref.y)
        assert f["cycles"].shape == (3,)


def test_run_simulation_user_errors(jv, tmp_path, monkeypatch):
    model, spec, _, x, lengths = jv
    np.savez(tmp_path / "in.npz", x=x[:1], lengths=lengths[:1])
    args = (model, spec, tmp_path / "in.npz", tmp_path / "out.npz")
    with pytest.raises(GruHwError, match=r"^simulator must be one of verilator, icarus, "):
        run_simulation(*args, lanes=8, simulator="modelsim")
    with pytest.raises(GruHwError, match=r"out\.txt: output file must end in \.npz"):
        run_simulation(model, spec, tmp_path / "in.npz", tmp_path / "out.txt", lanes=8)
    with pytest.raises(GruHwError, match=r"missing\.npz: no such file"):
        run_simulation(model, spec, tmp_path / "missing.npz", tmp_path / "o.npz", lanes=8)
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which",
                        lambda name, *a, **k: None if name in ("iverilog", "vvp")
                        else real_which(name, *a, **k))
    with pytest.raises(GruHwError, match=r"^iverilog not found: install it with "
                                         r"`apt-get install -y iverilog`$"):
        run_simulation(*args, lanes=8, simulator="icarus")


# ---- slow sweeps --------------------------------------------------------------------------------
@pytest.mark.slow
def test_classifier_whole_test_set_verilator(jv, sim_root, tmp_path):
    require_tool("verilator")
    model, spec, qm, x, lengths = jv
    xq, ln = _quantized(model, spec, x, lengths)
    res = rtl_run(qm, xq, ln, simulator="verilator", lanes=8, build_root=sim_root,
                  test_dir=tmp_path, options=STRESS)
    assert res["match"], res["mismatch"]


@pytest.mark.slow
@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("reset_after,head,hidden,lanes,sequence,keep_state", [
    (True, None, (7,), 1, True, False),
    (True, 2, (5, 4, 3), 4, False, True),
    (False, None, (6, 5), 7, True, True),
    (False, 3, (8,), 24, False, False),
])
def test_random_models_sweep(simulator, reset_after, head, hidden, lanes, sequence, keep_state,
                             sim_root, tmp_path):
    require_tool(simulator)
    rng = np.random.default_rng(lanes * 31 + len(hidden))
    model = random_model(rng, 3, list(hidden), reset_after=reset_after, head=head)
    spec = choose_spec(model)
    x = rng.normal(0, 1.5, (6, 5, 3))
    lengths = rng.integers(1, 6, 6)
    xq, lengths = _quantized(model, spec, x, lengths)
    qm = quantize_model(model, spec)
    res = rtl_run(qm, xq, lengths, simulator=simulator, lanes=lanes, sequence=sequence,
                  keep_state=keep_state, build_root=sim_root, test_dir=tmp_path,
                  options={**STRESS, "reset_after_beats": 7})
    assert res["match"], res["mismatch"]


@pytest.mark.slow
def test_mismatch_waves_verilator_real_core(sim_root, tmp_path):
    require_tool("verilator")
    qm, xq, lengths = _random_case(5)
    golden = int_forward_q(qm, xq, lengths, sequence=True)
    golden.y[2, 1] -= 1
    res = rtl_run(qm, xq, lengths, simulator="verilator", lanes=3, sequence=True,
                  build_root=sim_root, test_dir=tmp_path, golden=golden)
    assert not res["match"]
    t = int(lengths[2]) - 1
    assert res["mismatch"].startswith(f"sequence 2, step {t}, y_head index 1: expected ")
    assert Path(res["waves"]).suffix in (".fst", ".vcd") and Path(res["waves"]).exists()
