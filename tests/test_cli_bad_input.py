"""Every command and flag given bad input: exit 2, one line on stderr naming the flag or file,
no traceback, and nothing new on disk.

Each case builds its argv in a fresh folder holding a tiny model, inputs and a few prepared
files; the whole folder is snapshotted before and after, so a case that leaves anything behind
(an empty output folder, a temporary file) fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import random_model
from gru_hw.cli import main
from gru_hw.quant import choose_spec


@pytest.fixture
def ws(tmp_path, rng):
    """A workspace: m.npz (3 -> [5, 4] -> 2), in.npz, and files the cases point at."""
    model = random_model(rng, 3, [5, 4], head=2)
    model.save_npz(tmp_path / "m.npz")
    random_model(rng, 3, 4).save_npz(tmp_path / "one_layer.npz")
    x = rng.normal(0, 1, (3, 4, 3))
    np.savez(tmp_path / "in.npz", x=x)
    np.savez(tmp_path / "huge.npz", x=x * 1e300)
    nan = x.copy()
    nan[1, 2, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=nan)
    (tmp_path / "file.txt").write_text("a file, not a folder\n")
    (tmp_path / "d.npz").mkdir()
    (tmp_path / "out").mkdir()
    q = choose_spec(model).to_json()
    (tmp_path / "q.json").write_text(json.dumps(q))
    (tmp_path / "q_typo.json").write_text(json.dumps({**q, "weigth_bits": 8}))
    (tmp_path / "q_width.json").write_text(json.dumps({**q, "weight_bits": 8}))
    (tmp_path / "q_range.json").write_text(json.dumps({**q, "act_bits": 99}))
    (tmp_path / "q_bad.json").write_text("{not json")
    build = tmp_path / "build"
    build.mkdir()
    (build / "report.json").write_text(json.dumps({"board": "icebreaker"}))  # no "uart"
    good = tmp_path / "goodbuild"
    good.mkdir()
    (good / "report.json").write_text(json.dumps({"board": "icebreaker",
                                                  "uart": {"baud": 115200}}))
    return tmp_path


# (id, argv (in the workspace), text the error line must contain)
CASES = [
    # ---- golden: the output path, checked before any work
    ("golden-o-proc", "golden m.npz in.npz -o /proc/o.npz", "/proc/o.npz: cannot write in /proc"),
    ("golden-o-dir", "golden m.npz in.npz -o d.npz", "d.npz: is a directory"),
    ("golden-o-suffix", "golden m.npz in.npz -o o.txt", "o.txt: output file must end in .npz"),
    ("golden-o-missing-dir", "golden m.npz in.npz -o nowhere/o.npz", "directory nowhere does not"),
    ("golden-o-under-file", "golden m.npz in.npz -o file.txt/o.npz", "file.txt is not a directory"),
    ("golden-o-empty", ["golden", "m.npz", "in.npz", "-o", ""], "'': not a file name"),
    ("golden-no-o", "golden m.npz in.npz", "-o/--output"),
    # ---- golden: files and quant flags
    ("golden-model-missing", "golden nope.npz in.npz -o o.npz", "nope.npz: no such file"),
    ("golden-model-ext", "golden file.txt in.npz -o o.npz", "file.txt: unknown model file type"),
    ("golden-inputs-missing", "golden m.npz nope.npz -o o.npz", "nope.npz: no such file"),
    ("golden-inputs-nan", "golden m.npz nan.npz -o o.npz", "nan.npz: x contains 1 NaN"),
    ("golden-inputs-dir", "golden m.npz out -o o.npz", "out: is a directory"),
    ("golden-act-bits-low", "golden m.npz in.npz -o o.npz --act-bits 5",
     "--act-bits: must be an integer in 6..24, got 5"),
    ("golden-act-bits-high", "golden m.npz in.npz -o o.npz --act-bits 25",
     "--act-bits: must be an integer in 6..24, got 25"),
    ("golden-weight-bits", "golden m.npz in.npz -o o.npz --weight-bits 1",
     "--weight-bits: must be an integer in 2..24, got 1"),
    ("golden-weight-bits-text", "golden m.npz in.npz -o o.npz --weight-bits eight",
     "--weight-bits: must be an integer, got 'eight'"),
    ("golden-segments", "golden m.npz in.npz -o o.npz --pwl-segments 3",
     "--pwl-segments: must be a power of two in 2..8192, got 3"),
    ("golden-segments-high", "golden m.npz in.npz -o o.npz --pwl-segments 16384",
     "--pwl-segments: must be an integer in 2..8192, got 16384"),
    ("golden-qconfig-missing", "golden m.npz in.npz -o o.npz --qconfig nope.json",
     "nope.json: no such file"),
    ("golden-qconfig-dir", "golden m.npz in.npz -o o.npz --qconfig out", "out: is a directory"),
    ("golden-qconfig-json", "golden m.npz in.npz -o o.npz --qconfig q_bad.json",
     "q_bad.json: not valid JSON"),
    ("golden-qconfig-typo", "golden m.npz in.npz -o o.npz --qconfig q_typo.json",
     "q_typo.json: unknown key 'weigth_bits'"),
    ("golden-qconfig-width", "golden m.npz in.npz -o o.npz --qconfig q_width.json",
     "q_width.json: layers[0].w_ih_fmt"),
    ("golden-qconfig-range", "golden m.npz in.npz -o o.npz --qconfig q_range.json",
     "q_range.json: act_bits: must be an integer in 6..24, got 99"),
    ("golden-qconfig-model", "golden one_layer.npz in.npz -o o.npz --qconfig q.json",
     "q.json: has 2 layer(s), the model has 1"),
    ("golden-qconfig-and-bits", "golden m.npz in.npz -o o.npz --qconfig q.json --act-bits 8",
     "--qconfig cannot be combined with --act-bits"),
    ("golden-float-and-calibrate", "golden m.npz in.npz -o o.npz --float --calibrate in.npz",
     "--float cannot be combined with --calibrate"),
    ("golden-calibrate-missing", "golden m.npz in.npz -o o.npz --calibrate nope.npz",
     "nope.npz: no such file"),
    ("golden-calibrate-nan", "golden m.npz in.npz -o o.npz --calibrate nan.npz", "nan.npz: x "),
    ("golden-calibrate-huge", "golden m.npz in.npz -o o.npz --calibrate huge.npz",
     "huge.npz: values reach |x| = "),
    # ---- info
    ("info-steps", "info m.npz --steps 0", "--steps: must be an integer in 1..100000, got 0"),
    ("info-steps-huge", "info m.npz --steps 1000000000000",
     "--steps: must be an integer in 1..100000, got 1000000000000"),
    ("info-lanes", "info m.npz --lanes 100000", "--lanes must be in 1..15"),
    ("info-lanes-zero", "info m.npz --lanes 0", "--lanes: must be an integer at least 1, got 0"),
    ("info-spram-no-spram", "info m.npz --board ulx3s-85f --lanes 2 --weight-memory spram",
     "--weight-memory: ulx3s-85f has no SPRAM"),
    ("info-weight-memory-bad", "info m.npz --weight-memory flash", "--weight-memory: invalid choice"),
    ("info-target-no-calibrate", "info m.npz --target-error 0.1", "need --calibrate"),
    ("info-target-negative", "info m.npz --calibrate in.npz --target-error -1",
     "--target-error: must be a finite number >= 0, got -1"),
    ("info-target-nan", "info m.npz --calibrate in.npz --target-error nan",
     "--target-error: must be a finite number >= 0, got nan"),
    ("info-both-targets", "info m.npz --calibrate in.npz --target-error 1 "
     "--target-accuracy-drop 1", "either --target-accuracy-drop or --target-error"),
    ("info-accuracy-no-labels", "info m.npz --calibrate in.npz --target-accuracy-drop 1",
     "in.npz: --target-accuracy-drop needs 'labels'"),
    ("info-calibrate-huge", "info m.npz --calibrate huge.npz", "huge.npz: values reach |x| = "),
    ("info-qconfig-typo", "info m.npz --qconfig q_typo.json", "q_typo.json: unknown key"),
    ("info-streams-zero", "info m.npz --streams 0",
     "--streams: must be an integer in 1..16, got 0"),
    ("info-streams-high", "info m.npz --streams 17",
     "--streams: must be an integer in 1..16, got 17"),
    ("info-streams-text", "info m.npz --streams two", "--streams: must be an integer, got 'two'"),
    ("generate-streams-float", "generate m.npz -o gen --streams 1.5",
     "--streams: must be an integer, got '1.5'"),
    ("generate-streams-zero", "generate m.npz -o gen --streams 0", "--streams: must be an integer"),
    ("simulate-streams-zero", "simulate m.npz in.npz -o s.npz --simulator amaranth --streams 0",
     "--streams: must be an integer in 1..16, got 0"),
    ("simulate-streams-high", "simulate m.npz in.npz -o s.npz --simulator amaranth "
     "--streams 99", "--streams: must be an integer in 1..16, got 99"),
    ("simulate-interleave", "simulate m.npz in.npz -o s.npz --simulator amaranth --streams 2 "
     "--interleave zigzag", "--interleave: invalid choice: 'zigzag'"),
    ("simulate-seed", "simulate m.npz in.npz -o s.npz --simulator amaranth --seed -1",
     "--seed: must be an integer at least 0, got -1"),
    ("build-streams", "build m.npz --board icebreaker -o b --streams 0",
     "--streams: must be an integer in 1..16, got 0"),
    # ---- generate: the output folder
    ("generate-o-proc", "generate m.npz -o /proc/x", "/proc/x: cannot write in /proc"),
    ("generate-o-under-file", "generate m.npz -o file.txt/sub",
     "file.txt/sub: cannot create it, file.txt is not a directory"),
    ("generate-o-file", "generate m.npz -o file.txt", "file.txt: exists and is not a directory"),
    ("generate-lanes", "generate m.npz -o gen --lanes 100000", "--lanes must be in 1..15"),
    ("generate-lanes-nested", "generate m.npz -o new/gen --lanes 100000", "--lanes must be in"),
    ("generate-qconfig", "generate m.npz -o gen --qconfig q_width.json", "q_width.json: "),
    # ---- simulate: every path checked before the simulation
    ("simulate-o-proc", "simulate m.npz in.npz -o /proc/s.npz --simulator amaranth",
     "/proc/s.npz: cannot write in /proc"),
    ("simulate-o-dir", "simulate m.npz in.npz -o d.npz --simulator amaranth",
     "d.npz: is a directory"),
    ("simulate-waves-file", "simulate m.npz in.npz -o s.npz --simulator amaranth "
     "--waves file.txt", "--waves file.txt: exists and is not a directory"),
    ("simulate-build-dir", "simulate m.npz in.npz -o s.npz --simulator amaranth "
     "--build-dir file.txt/b", "--build-dir file.txt/b: cannot create it"),
    ("simulate-simulator", "simulate m.npz in.npz -o s.npz --simulator modelsim",
     "--simulator: invalid choice: 'modelsim'"),
    ("simulate-inputs", "simulate m.npz nan.npz -o s.npz --simulator amaranth", "nan.npz: x"),
    # ---- build: checked before any tool runs
    ("build-board", "build m.npz --board nope -o b", "unknown board 'nope'"),
    ("build-o-file", "build m.npz --board icebreaker -o file.txt",
     "file.txt: exists and is not a directory"),
    ("build-clock", "build m.npz --board icebreaker -o b --clock-mhz 0",
     "--clock-mhz: must be a finite number within 1..500, got 0"),
    ("build-seeds", "build m.npz --board icebreaker -o b --seeds 0",
     "--seeds: must be an integer in 1..100, got 0"),
    ("build-no-board", "build m.npz -o b", "--board"),
    # ---- flash
    ("flash-missing", "flash nowhere --dry-run", "nowhere"),
    ("flash-no-bitstream", "flash goodbuild --dry-run", "goodbuild"),
    # ---- run: everything checked before the port is opened
    ("run-report-no-uart", "run in.npz -o r.npz --port /dev/null-port --build-dir build",
     "report.json: no 'uart' with a 'baud' rate"),
    ("run-o-proc", "run in.npz -o /proc/r.npz --port /dev/null-port",
     "/proc/r.npz: cannot write in /proc"),
    ("run-inputs-missing", "run nope.npz -o r.npz --port /dev/null-port", "nope.npz: no such"),
    ("run-inputs-nan", "run nan.npz -o r.npz --port /dev/null-port", "nan.npz: x contains"),
    ("run-check-no-model", "run in.npz -o r.npz --port /dev/null-port --check",
     "--check needs --model"),
    ("run-load-no-build", "run in.npz -o r.npz --port /dev/null-port --model m.npz "
     "--load-weights", "--load-weights needs --model"),
    ("run-build-dir-missing", "run in.npz -o r.npz --port /dev/null-port --build-dir nowhere",
     "--build-dir nowhere: no such directory"),
    ("run-model-missing", "run in.npz -o r.npz --port /dev/null-port --model nope.npz",
     "nope.npz: no such file"),
    ("run-port", "run in.npz -o r.npz --port /dev/gru-hw-no-such-port --build-dir goodbuild",
     "/dev/gru-hw-no-such-port"),
    ("run-baud", "run in.npz -o r.npz --port /dev/null-port --baud 0",
     "--baud: must be an integer at least 1, got 0"),
    # ---- demo
    ("demo-o-file", "demo --quick -o file.txt", "file.txt: exists and is not a directory"),
    # ---- the command line itself
    ("no-command", "", "COMMAND"),
    ("unknown-command", "frobnicate m.npz", "invalid choice: 'frobnicate'"),
    ("unknown-flag", "info m.npz --bogus 3", "unrecognized arguments: --bogus 3"),
]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("argv, expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exit_2_one_line_nothing_left(ws, capsys, monkeypatch, argv, expect):
    if "/proc/" in str(argv) and not Path("/proc").is_dir():
        pytest.skip("no /proc")
    monkeypatch.chdir(ws)
    before = _tree(ws)
    args = argv.split() if isinstance(argv, str) else argv
    try:
        code = main(args)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        code = exc.code
    out = capsys.readouterr()
    assert code == 2, out.err
    assert out.err.count("\n") == 1 and out.err.endswith("\n"), out.err
    assert expect in out.err, out.err
    assert "Traceback" not in out.err
    assert out.err.startswith("gru-hw")
    assert _tree(ws) == before, f"left behind: {_tree(ws) - before}"


def test_console_script_bad_output_no_traceback(ws):
    """Through a real process, as a user runs it: the reproduced `-o d.npz` case."""
    import subprocess
    import sys

    before = _tree(ws)
    proc = subprocess.run([sys.executable, "-m", "gru_hw.cli", "golden", "m.npz", "in.npz", "-o",
                           "d.npz"], cwd=ws, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "default"})
    assert proc.returncode == 2
    assert proc.stderr == "gru-hw golden: error: d.npz: is a directory, expected a file name\n"
    assert _tree(ws) == before
