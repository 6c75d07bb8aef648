"""The generated Verilog passes ``verilator --lint-only -Wall``: no errors, and no warnings but the
waived kinds, each waived for a stated reason (sim/runner.py: VERILATOR_WAIVERS, LINT_WALL_WAIVERS).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import random_model
from gru_hw.quant import choose_spec, quantize_model
from gru_hw.simulate import generate_cached
from gru_hw.sim.runner import LINT_WALL_WAIVERS, VERILATOR_WAIVERS, verilator_bin_dir
from gru_hw.sim.testing import build_root, require_tool

DATA = Path(__file__).resolve().parent.parent / "gru_hw" / "data"
WAIVED = {flag.removeprefix("-Wno-") for flag in (*VERILATOR_WAIVERS, *LINT_WALL_WAIVERS)}


@pytest.fixture(scope="session")
def sim_root(request, tmp_path_factory) -> Path:
    return build_root(request.config, tmp_path_factory)


def _classifier():
    from gru_hw.importers import load_model

    model = load_model(DATA / "japanese_vowels_gru.pt")
    return quantize_model(model, choose_spec(model))


def _reset_before():
    model = random_model(np.random.default_rng(5), 4, [6, 5], reset_after=False, head=3)
    return quantize_model(model, choose_spec(model))


def _lint(verilog: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{verilator_bin_dir()}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["verilator", "--lint-only", "-Wall", *flags, str(verilog)],
                          capture_output=True, text=True, env=env, timeout=600)


CASES = {
    "classifier-8-lanes": (_classifier, 8, False, None),
    "reset-before-2-layers-sequence": (_reset_before, 3, True, None),
    # tail width K > 1 (issue 13): beats of 3 rows, groups starting inside a beat; 2 unit ways
    "classifier-32-lanes-tail-width-3": (_classifier, 32, False, "dsp-k3"),
    "reset-before-2-layers-tail-width-6": (_reset_before, 5, True, "dsp-k6"),
    # interleaved streams (issue 13): per-stream state copies, stream ids on the beats
    "reset-before-2-layers-3-streams": (_reset_before, 4, True, None, 3),
    "classifier-24-lanes-tail-width-3-2-streams": (_classifier, 24, False, "dsp-k3", 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_generated_verilog_lints_clean(case, sim_root):
    require_tool("verilator")
    make_qm, lanes, sequence, profile, *streams = CASES[case]
    verilog, _ = generate_cached(make_qm(), sim_root, lanes=lanes, sequence=sequence,
                                 **({"profile": profile} if profile else {}),
                                 **({"streams": streams[0]} if streams else {}))
    # Everything -Wall reports, nothing waived: only the waived kinds may appear.
    raw = _lint(verilog, "-Wno-fatal")
    kinds = Counter(re.findall(r"%Warning-([A-Z0-9_]+):", raw.stderr))
    errors = [line for line in raw.stderr.splitlines() if line.startswith("%Error")]
    assert not errors, "\n".join(errors[:20])
    unexpected = {k: n for k, n in kinds.items() if k not in WAIVED}
    assert not unexpected, f"new Verilator warnings in {verilog}: {unexpected}\n" + "\n".join(
        line for line in raw.stderr.splitlines()
        if any(f"%Warning-{k}:" in line for k in unexpected))[:4000]
    # With the waivers: clean, and lint fails on warnings (no -Wno-fatal).
    clean = _lint(verilog, *VERILATOR_WAIVERS, *LINT_WALL_WAIVERS)
    assert clean.returncode == 0 and "%Warning" not in clean.stderr, clean.stderr[:4000]
