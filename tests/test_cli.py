"""The command line: info and golden end to end, and every user mistake gives exit 2 and one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import random_model
from gru_hw.cli import main
from gru_hw.golden import float_forward, int_forward
from gru_hw.quant import QuantSpec, choose_spec, quantize_model


@pytest.fixture
def files(tmp_path, rng):
    model = random_model(rng, 3, [5, 4], head=2)
    mpath = tmp_path / "m.npz"
    model.save_npz(mpath)
    x = rng.normal(0, 1, (4, 6, 3))
    lengths = np.array([6, 2, 5, 1])
    ipath = tmp_path / "in.npz"
    np.savez(ipath, x=x, lengths=lengths)
    return model, mpath, x, lengths, ipath


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_golden_fixed_and_float(files, tmp_path, capsys):
    model, mpath, x, lengths, ipath = files
    out = tmp_path / "o.npz"
    code, stdout, _ = run(capsys, "golden", mpath, ipath, "-o", out, "--sequence", "--weight-bits", "10")
    assert code == 0 and "fixed golden" in stdout
    qm = quantize_model(model, choose_spec(model, weight_bits=10))
    want = int_forward(qm, x, lengths, sequence=True)
    got = np.load(out)
    assert np.array_equal(got["y"], want.y) and np.array_equal(got["h"], want.h)
    code, _, _ = run(capsys, "golden", mpath, ipath, "-o", out, "--float")
    assert code == 0
    assert np.array_equal(np.load(out)["y"], float_forward(model, x, lengths).y)
    assert "h" not in np.load(out).files


def test_golden_keep_state_and_qconfig(files, tmp_path, capsys):
    model, mpath, x, lengths, ipath = files
    q = tmp_path / "q.json"
    choose_spec(model, 8, 9).save(q)
    out = tmp_path / "o.npz"
    assert run(capsys, "golden", mpath, ipath, "-o", out, "--keep-state", "--qconfig", q)[0] == 0
    qm = quantize_model(model, QuantSpec.load(q))
    assert np.array_equal(np.load(out)["y"], int_forward(qm, x, lengths, keep_state=True).y)


def test_info_json(files, capsys):
    model, mpath, *_ = files
    code, stdout, _ = run(capsys, "info", mpath, "--json", "--steps", "10", "--lanes", "3")
    assert code == 0
    info = json.loads(stdout)
    assert info["hidden_sizes"] == [5, 4] and info["output_size"] == 2 and info["lanes"] == 3
    assert info["pwl"]["sigmoid"]["max_abs_error"] <= 0.002
    assert info["cycles_per_step"] >= info["ideal_cycles_per_step"] == -(-3 * (5 * 8 + 4 * 9) // 3)
    assert info["cycles_per_sequence"] >= 10 * info["cycles_per_step"]
    code, stdout, _ = run(capsys, "info", mpath)
    assert code == 0 and "cycles/step" in stdout and "sigmoid" in stdout


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", [
    "missing_model", "corrupt_model", "unknown_ext", "missing_inputs", "corrupt_inputs", "wrong_width",
    "nan_inputs", "bad_lengths", "no_x", "bad_bits", "bad_bits_text", "qconfig_and_bits",
    "bad_qconfig", "bad_segments", "float_and_bits", "missing_output_dir", "nan_weights",
])
def test_user_mistakes_exit_2_one_line(files, tmp_path, capsys, case):
    model, mpath, x, lengths, ipath = files
    out = tmp_path / "o.npz"
    argv = ["golden", mpath, ipath, "-o", out]
    expect = None
    if case == "missing_model":
        argv[1], expect = tmp_path / "nope.npz", "nope.npz: no such file"
    elif case == "corrupt_model":
        argv[1], expect = _write(tmp_path / "bad.npz", b"garbage"), "bad.npz"
    elif case == "unknown_ext":
        argv[1], expect = _write(tmp_path / "m.txt", b"x"), "unknown model file type"
    elif case == "missing_inputs":
        argv[2], expect = tmp_path / "none.npz", "none.npz: no such file"
    elif case == "corrupt_inputs":
        argv[2], expect = _write(tmp_path / "in2.npz", b"PK\x03\x04junk"), "in2.npz: cannot read"
    elif case == "wrong_width":
        np.save(tmp_path / "w.npy", np.zeros((2, 3, 7)))
        argv[2], expect = tmp_path / "w.npy", "has 7 features per step, the model takes 3"
    elif case == "nan_inputs":
        bad = x.copy()
        bad[0, 0, 0] = np.inf
        np.savez(tmp_path / "nan.npz", x=bad)
        argv[2], expect = tmp_path / "nan.npz", "NaN or infinite"
    elif case == "bad_lengths":
        np.savez(tmp_path / "l.npz", x=x, lengths=np.array([1, 2, 3, 99]))
        argv[2], expect = tmp_path / "l.npz", "lengths must be within 1..6"
    elif case == "no_x":
        np.savez(tmp_path / "nox.npz", y=x)
        argv[2], expect = tmp_path / "nox.npz", "has no array 'x'"
    elif case == "bad_bits":
        argv += ["--weight-bits", "40"]
        expect = "--weight-bits: must be an integer in 2..24, got 40"
    elif case == "bad_bits_text":
        argv += ["--act-bits", "many"]
        expect = "--act-bits: must be an integer, got 'many'"
    elif case == "qconfig_and_bits":
        choose_spec(model).save(tmp_path / "q.json")
        argv += ["--qconfig", tmp_path / "q.json", "--weight-bits", "8"]
        expect = "--qconfig cannot be combined with --weight-bits"
    elif case == "bad_qconfig":
        argv += ["--qconfig", _write(tmp_path / "q.json", b"{not json")]
        expect = "q.json: not valid JSON"
    elif case == "bad_segments":
        argv += ["--pwl-segments", "48"]
        expect = "--pwl-segments: must be a power of two in 2..8192, got 48"
    elif case == "float_and_bits":
        argv += ["--float", "--act-bits", "8"]
        expect = "--float cannot be combined with --act-bits"
    elif case == "missing_output_dir":
        argv[4], expect = tmp_path / "no" / "o.npz", "does not exist"
    elif case == "nan_weights":
        d = dict(np.load(mpath))
        d["w_hh_1"] = d["w_hh_1"].copy()
        d["w_hh_1"][0, 0] = np.nan
        np.savez(tmp_path / "nanw.npz", **d)
        argv[1], expect = tmp_path / "nanw.npz", "NaN"
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert expect in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_console_script_exit_status(files, tmp_path):
    """Through a real process: exit 2, one stderr line, no traceback."""
    _, mpath, _, _, ipath = files
    proc = subprocess.run([sys.executable, "-m", "gru_hw.cli", "golden", str(mpath), str(tmp_path / "x.npz"),
                           "-o", str(tmp_path / "o.npz")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("x.npz: no such file") and proc.stderr.count("\n") == 1


# ---- outputs: qconfig.json, atomic and stale-free output folders ------------------------------------
def test_generate_writes_qconfig_that_qconfig_accepts(files, tmp_path, capsys):
    model, mpath, x, lengths, ipath = files
    gen = tmp_path / "gen"
    code, stdout, _ = run(capsys, "generate", mpath, "-o", gen, "--weight-bits", "9",
                          "--act-bits", "10", "--runtime-weights")
    assert code == 0 and "qconfig.json" in stdout
    assert {p.name for p in gen.iterdir()} == {"gru_core.v", "spec.json", "qconfig.json",
                                               "weights.npz"}
    spec = QuantSpec.load(gen / "qconfig.json")
    assert spec == choose_spec(model, 9, 10)
    assert json.loads((gen / "spec.json").read_text())["qconfig"] == "qconfig.json"
    want = int_forward(quantize_model(model, spec), x, lengths).y
    for q in ("qconfig.json", "spec.json"):  # the core's spec.json carries the same QuantSpec
        out = tmp_path / "o.npz"
        assert run(capsys, "golden", mpath, ipath, "-o", out, "--qconfig", gen / q)[0] == 0
        assert np.array_equal(np.load(out)["y"], want)
    # Regenerating without the weight port removes the stale weights.npz ...
    assert run(capsys, "generate", mpath, "-o", gen)[0] == 0
    assert {p.name for p in gen.iterdir()} == {"gru_core.v", "spec.json", "qconfig.json"}
    assert QuantSpec.load(gen / "qconfig.json") == choose_spec(model)
    # ... and a failed generate leaves the folder exactly as it was.
    before = {p.name: p.read_bytes() for p in gen.iterdir()}
    assert run(capsys, "generate", mpath, "-o", gen, "--lanes", "99")[0] == 2
    assert {p.name: p.read_bytes() for p in gen.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen", "in.npz", "m.npz", "o.npz"]


def test_generate_creates_missing_parents(files, tmp_path, capsys):
    _, mpath, *_ = files
    assert run(capsys, "generate", mpath, "-o", tmp_path / "a" / "b")[0] == 0
    assert (tmp_path / "a" / "b" / "gru_core.v").is_file()
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]


def test_golden_replaces_output_atomically(files, tmp_path, capsys):
    _, mpath, _, _, ipath = files
    out = tmp_path / "o.npz"
    out.write_bytes(b"old")
    assert run(capsys, "golden", mpath, ipath, "-o", out)[0] == 0
    assert "y" in np.load(out).files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "m.npz", "o.npz"]


# ---- raw-scale calibration and the recommendation -----------------------------------------------
def test_raw_scale_calibration(files, tmp_path, capsys):
    """Inputs like 16-bit audio (x ~ N(0, 15000)) get integer bits, not an internal error."""
    model, mpath, _, _, _ = files
    rng = np.random.default_rng(5)
    x = rng.normal(0, 15000, (6, 5, 3))
    big = tmp_path / "big.npz"
    np.savez(big, x=x)
    code, stdout, err = run(capsys, "info", mpath, "--calibrate", big)
    assert code == 0, err
    assert "x        Q17.-1" in stdout
    assert "to use it, give: --weight-bits" in stdout and f"--calibrate {big}" in stdout
    out = tmp_path / "o.npz"
    assert run(capsys, "golden", mpath, big, "-o", out, "--calibrate", big)[0] == 0
    spec = choose_spec(model, calibration=x.reshape(-1, 3))
    assert str(spec.x_fmt) == "Q17.-1"
    assert np.array_equal(np.load(out)["y"], int_forward(quantize_model(model, spec), x).y)


def test_recommendation_json_gives_the_flags(files, tmp_path, capsys):
    _, mpath, _, _, ipath = files
    code, stdout, _ = run(capsys, "info", mpath, "--calibrate", ipath, "--target-error", "0.05",
                          "--json")
    assert code == 0
    r = json.loads(stdout)["calibration"]["recommendation"]["recommended"]
    assert r["flags"] == (f"--weight-bits {r['weight_bits']} --act-bits {r['act_bits']} "
                          f"--calibrate {ipath}")


# ---- progress bars, help ----------------------------------------------------------------------
@pytest.mark.parametrize("terminal, quiet, shown", [
    (True, False, True), (True, True, False), (False, False, False),
])
def test_progress_bar_only_on_a_terminal(files, tmp_path, capsys, monkeypatch, terminal, quiet,
                                         shown):
    import gru_hw.cli as cli

    _, mpath, _, _, ipath = files
    monkeypatch.setattr(cli, "_stderr_is_terminal", lambda: terminal)
    argv = (["--quiet"] if quiet else []) + ["golden", mpath, ipath, "-o", tmp_path / "o.npz"]
    code, stdout, err = run(capsys, *argv)
    assert code == 0 and "fixed golden" in stdout
    assert ("fixed golden" in err) == shown
    if not shown:
        assert err == ""


def test_quiet_after_the_command(files, tmp_path, capsys):
    _, mpath, _, _, ipath = files
    assert run(capsys, "golden", mpath, ipath, "-o", tmp_path / "o.npz", "-q")[0] == 0


def test_every_option_documents_its_default():
    import argparse

    from gru_hw.cli import build_parser

    parser = build_parser()
    assert "examples:" in parser.epilog and "gru-hw golden" in parser.epilog
    assert parser.description.startswith("Turn a trained GRU")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            if not action.option_strings or isinstance(action, (argparse._HelpAction,)):
                assert action.option_strings or action.help, (name, action.dest)
                continue
            assert action.help, (name, action.option_strings)
            if action.required:
                assert "(required)" in action.help, (name, action.option_strings)
            elif action.dest != "quiet":
                assert "default" in action.help, (name, action.option_strings)


# ---- --streams (interleaved streams) ------------------------------------------------------------
def test_streams_on_info_and_generate(files, tmp_path, capsys):
    from gru_hw.schedule import Schedule
    from gru_hw.sim.job import PortLayout

    model, mpath, *_ = files
    code, stdout, _ = run(capsys, "info", mpath, "--json", "--lanes", "4", "--streams", "3")
    assert code == 0
    info = json.loads(stdout)
    sch = Schedule(quantize_model(model, choose_spec(model)), 4, streams=3)
    assert info["streams"] == 3
    assert info["cycles_per_stream_step"] == sch.cycles_per_stream_step
    assert info["cycles_per_stream_step"] <= info["cycles_per_step"]
    code, stdout, _ = run(capsys, "info", mpath, "--lanes", "4", "--streams", "3")
    assert code == 0 and f"3 streams: {sch.cycles_per_stream_step:g} cycles per stream-step" \
        in stdout
    code, stdout, _ = run(capsys, "info", mpath, "--lanes", "4")
    assert code == 0 and "stream-step" not in stdout
    gen = tmp_path / "gen"
    code, stdout, _ = run(capsys, "generate", mpath, "-o", gen, "--lanes", "4", "--streams", "2")
    assert code == 0 and "2 interleaved streams" in stdout
    spec = json.loads((gen / "spec.json").read_text())
    assert spec["streams"] == 2 and spec["schedule"]["streams"] == 2
    assert PortLayout.from_ports(spec["ports"]).stream_width == 1
    assert "stream" in spec["ports"][[p["name"] for p in spec["ports"]].index(
        "o_stream__payload")]["fields"]


def test_streams_simulate_amaranth(files, tmp_path, capsys):
    """simulate --streams 2 --interleave random: exact against the per-stream golden (with
    --keep-state each stream continues its own state); the cycles per stream-step measured are
    the schedule's for the same beats."""
    from gru_hw.golden import quantize_inputs
    from gru_hw.streams import golden_streams

    model, mpath, x, lengths, ipath = files
    out = tmp_path / "s.npz"
    code, stdout, err = run(capsys, "simulate", mpath, ipath, "-o", out, "--simulator",
                            "amaranth", "--lanes", "6", "--streams", "2", "--interleave",
                            "random", "--seed", "3", "--keep-state", "--json")
    assert code == 0, err
    s = json.loads(stdout)
    assert s["match"] and s["streams"] == 2 and s["interleave"] == "random"
    assert s["accepts_match_model"] is True
    assert s["cycles_per_stream_step"] == s["cycles_per_stream_step_model"] > 0
    spec = choose_spec(model)
    qm = quantize_model(model, spec)
    xq, _ = quantize_inputs(spec, x)
    y, _ = golden_streams(qm, xq, lengths, [0, 1, 0, 1], keep_state=True)
    from gru_hw.fixed import to_float

    np.testing.assert_array_equal(np.load(out)["y"], to_float(y, spec.out_fmt))
    code, stdout, err = run(capsys, "simulate", mpath, ipath, "-o", out, "--simulator",
                            "amaranth", "--lanes", "6", "--streams", "2")
    assert code == 0, err
    assert "2 streams, round_robin:" in stdout and "cycles per stream-step measured" in stdout


def test_streams_build_passes_through(files, tmp_path, capsys, monkeypatch):
    """build --streams S hands S to the board build (no FPGA tools run here)."""
    import gru_hw.board

    _, mpath, *_ = files
    seen = {}

    def fake_build(qm, board, out, **kwargs):
        seen.update(kwargs)
        return {"board": board}

    monkeypatch.setattr(gru_hw.board, "build", fake_build)
    code, _, err = run(capsys, "build", mpath, "--board", "ulx3s-85f", "-o", tmp_path / "b",
                       "--lanes", "2", "--streams", "4")
    assert code == 0, err
    assert seen["streams"] == 4
    seen.clear()
    assert run(capsys, "build", mpath, "--board", "ulx3s-85f", "-o", tmp_path / "b",
               "--lanes", "2")[0] == 0
    assert seen.get("streams", 1) == 1


def test_streams_run_passes_through(files, tmp_path, capsys, monkeypatch):
    """run --streams S deals INPUTS to the board's streams: S reaches run_on_board (the board
    side is simulated in tests/test_boards_sim.py); a bad S is refused with status 2."""
    import gru_hw.board

    *_, ipath = files
    seen = {}

    def fake_run(port, inputs, output, **kwargs):
        seen.update(kwargs)
        return {"sequences": 1, "cycles_mean": 1.0, "match": True}

    monkeypatch.setattr(gru_hw.board, "run_on_board", fake_run)
    code, _, err = run(capsys, "run", ipath, "-o", tmp_path / "o.npz", "--port", "x",
                       "--streams", "3", "--keep-state")
    assert code == 0, err
    assert seen["streams"] == 3 and seen["keep_state"]
    with pytest.raises(SystemExit) as e:
        run(capsys, "run", ipath, "-o", tmp_path / "o.npz", "--port", "x", "--streams", "0")
    assert e.value.code == 2 and "--streams" in capsys.readouterr().err
