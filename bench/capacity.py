"""iCEBreaker capacity: how large a GRU fits the iCE40 UP5K, with the weights in SPRAM when needed.

Builds 12 -> H -> 9 JapaneseVowels classifiers (H = 32: the shipped example; 64, 96, 128, 160 and
the two-layer 12 -> 96 -> 96 -> 9: trained by ``bench/models.py`` when missing) at 8 lanes, 8-bit
weights and activations, the input format calibrated on the model's train split, weight memory
``auto`` (block RAM when the model fits there, else SPRAM). Each build runs the command line,
``gru-hw build MODEL --board icebreaker -o DIR --lanes 8 --weight-bits 8 --act-bits 8 --calibrate
TRAIN.npz``, so the figures are those of report.json. Prints one markdown table, then the command of
each row. Weights: the GRU layers' input and recurrent matrices and the head's (no biases).
``--from-report`` builds nothing: it prints the rows of existing ``gru-hw build`` output folders.

    python bench/capacity.py                          # all six models (long: one build each)
    python bench/capacity.py --hidden 96 128 --keep build/bench/capacity
    python bench/capacity.py --from-report build/bench/capacity/h32 build/bench/capacity/h128
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import boards  # also puts the repository root on sys.path
from boards import EXAMPLE, _cell
from common import ROOT
from models import DEFAULT_OUT, SPECS, ensure_models, load_meta, model_path, split_path

BOARD, LANES, BITS = "icebreaker", 8, (8, 8)
INPUTS, OUTPUTS = 12, 9
EXAMPLE_TRAIN = "gru_hw/data/japanese_vowels_train.npz"
#: --hidden choice -> (bench/models.py name or None for the shipped example, hidden sizes)
MODELS = {"32": (None, [32]), **{name[1:]: (name, hidden) for name, hidden in SPECS}}

HEADERS = ["model", "weights", "memory", "LC", "BRAM", "SPRAM", "DSP", "clock MHz", "Fmax MHz",
           "cycles/step", "us/step at Fmax", "build s"]


def label(sizes: list[int], outputs: int | None = OUTPUTS) -> str:
    """'12-128-9' for inputs, hidden sizes (bottom first) and the head's outputs (if any)."""
    return "-".join(map(str, sizes + ([outputs] if outputs else [])))


def weight_count(sizes: list[int], outputs: int | None = OUTPUTS) -> int:
    """Input + recurrent weights of the GRU layers (3 gates each) and the head's (no biases)."""
    n = sum(3 * h * (i + h) for i, h in zip(sizes, sizes[1:]))
    return n + (outputs * sizes[-1] if outputs else 0)


def report_sizes(r: dict) -> tuple[list[int], int | None]:
    """([inputs, hidden...], head outputs or None) of a report (every layer of the top's size)."""
    link = r["link"]
    sizes = [link["input_size"]] + [link["hidden_size"]] * link["num_layers"]
    return sizes, (link["output_size"] if r.get("quant", {}).get("head") else None)


def row(r: dict) -> str:
    """One table row from a report.json dict."""
    sizes, outputs = report_sizes(r)
    u = r["utilization"]
    met = "met" if r["timing_met"] else "missed"
    secs = r.get("build_seconds")
    cells = [label(sizes, outputs), weight_count(sizes, outputs),
             r.get("weight_memory", "bram").upper(), _cell(u, "lut"), _cell(u, "bram"),
             _cell(u, "spram"), _cell(u, "dsp"), f"{r['clock_mhz']:g} ({met})",
             f"{r['fmax_mhz']:.2f}", r["cycles_per_step"], f"{r['latency_us_per_step']:.2f}",
             "-" if secs is None else f"{secs:.0f}"]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def print_header() -> None:
    print("| " + " | ".join(HEADERS) + " |")
    print("|---|---:|---|---|---|---|---|---:|---:|---:|---:|---:|")


def identify(r: dict) -> tuple[str, str] | None:
    """(model, train split) paths of the example or a bench/models.py model that made report ``r``
    (same shape and model hash at the report's formats), or None."""
    sizes, _ = report_sizes(r)
    candidates = [(EXAMPLE, EXAMPLE_TRAIN)] if sizes == [INPUTS, 32] else []
    for name, hidden in SPECS:
        meta = load_meta(DEFAULT_OUT, name)
        if meta and [INPUTS, *meta["model"].get("hidden_sizes", hidden)] == sizes:
            candidates.append((model_path(DEFAULT_OUT, name),
                               split_path(DEFAULT_OUT, name, "train")))
    try:
        from gru_hw.importers import load_model
        from gru_hw.protocol import model_hash
        from gru_hw.quant import QuantSpec, quantize_model

        spec = QuantSpec.from_json(r["quant"])
        for model, train in candidates:
            qm = quantize_model(load_model(ROOT / model), spec)
            if model_hash(qm, weights=not r.get("runtime_weights")).hex() == r["model_hash"]:
                return str(_shown(ROOT / model)), str(_shown(ROOT / train))
    except Exception:  # noqa: BLE001 - any failure: the model is not known
        pass
    return None


def _shown(path) -> Path:
    """``path`` relative to the repository when it is inside it (as given or resolved), else
    absolute (build/models may be a link to another checkout's)."""
    p = Path(path)
    for cand in (p, p.absolute(), p.resolve()):
        try:
            return cand.relative_to(ROOT)
        except ValueError:
            continue
    return p.resolve()


def command_for(build_dir: str, r: dict) -> str:
    """The ``gru-hw build`` command that makes the build described by report.json ``r``."""
    q = r.get("quant", {})
    found = identify(r)
    model, train = found or ("MODEL", "TRAIN.npz")
    cmd = (f"gru-hw build {model} --board {r['board']} -o {build_dir} --lanes {r['lanes']} "
           f"--weight-bits {q.get('weight_bits')} --act-bits {q.get('act_bits')}")
    if q.get("calibrated"):
        cmd += f" --calibrate {train}"
    if r.get("runtime_weights"):
        cmd += " --runtime-weights"
    wm = r.get("weight_memory", "bram")
    if found is None or wm != _auto_memory(found[0], r):
        cmd += f" --weight-memory {wm}"
    return cmd + f" --clock-mhz {r['clock_mhz']:g}"


def _auto_memory(model: str, r: dict) -> str | None:
    """The weight memory ``--weight-memory auto`` picks for this build, None if unknown."""
    try:
        from gru_hw.fit import resolve_weight_memory
        from gru_hw.importers import load_model
        from gru_hw.quant import QuantSpec, quantize_model

        qm = quantize_model(load_model(ROOT / model), QuantSpec.from_json(r["quant"]))
        return resolve_weight_memory(qm, r["board"], r["lanes"],
                                     runtime_weights=bool(r.get("runtime_weights")))[0]
    except Exception:  # noqa: BLE001
        return None


def from_reports(dirs: list[str]) -> int:
    """Print this table's rows of existing build folders (bench/boards.py's reader)."""
    return boards.from_reports(dirs, header=print_header, row_of=row, command_of=command_for)


def sweep(args) -> int:
    wanted = [MODELS[h] for h in args.hidden]
    paths = ensure_models(DEFAULT_OUT, [(n, h) for n, h in wanted if n], verbose=True)
    print_header()
    commands = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, hidden in wanted:
            model, train = ((EXAMPLE, EXAMPLE_TRAIN) if name is None else
                            (_shown(paths[name]), _shown(split_path(DEFAULT_OUT, name, "train"))))
            folder = name or f"h{hidden[0]}"
            out = (Path(args.keep) if args.keep else Path(tmp)) / folder
            opts = ["--lanes", str(LANES), "--weight-bits", str(BITS[0]), "--act-bits",
                    str(BITS[1]), "--calibrate", str(train)]
            if args.clock_mhz:
                opts += ["--clock-mhz", f"{args.clock_mhz:g}"]
            shown = out if args.keep else "DIR"
            commands.append(f"gru-hw build {model} --board {BOARD} -o {shown} {' '.join(opts)}")
            out.mkdir(parents=True, exist_ok=True)
            (out / "report.json").unlink(missing_ok=True)
            log = out / "gru-hw-build.log"
            with open(log, "w") as f:
                rc = subprocess.run([sys.executable, "-m", "gru_hw.cli", "build", str(model),
                                     "--board", BOARD, "-o", str(out.resolve()), *opts],
                                    cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
            try:
                print(row(json.loads((out / "report.json").read_text())), flush=True)
            except (OSError, json.JSONDecodeError):
                last = [ln for ln in log.read_text().splitlines() if ln.strip()][-1:] or [""]
                print(f"gru-hw build {model}: exit {rc}, no report.json; {last[0]}",
                      file=sys.stderr)
                sizes = [INPUTS, *hidden]
                cells = [label(sizes), weight_count(sizes),
                         f"failed: {last[0].removeprefix('error: ')}"]
                print("| " + " | ".join(map(str, cells + [""] * (len(HEADERS) - 3))) + " |",
                      flush=True)
    clock = (f"{args.clock_mhz:g} MHz asked, reported as missed if so" if args.clock_mhz else
             "the board's default clock, rebuilt once at 90 % of the routed Fmax when missed")
    print(f"\nOne build per row, nextpnr's default seed; {clock}. The `gru-hw build` command of "
          "each:\n")
    for cmd in commands:
        print(f"    {cmd}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", nargs="+", choices=list(MODELS), default=list(MODELS),
                    metavar="H", help=f"models to build (default: all of {', '.join(MODELS)})")
    ap.add_argument("--clock-mhz", type=float, default=None,
                    help="core clock (default: the board's; a missed clock is retried once)")
    ap.add_argument("--keep", metavar="DIR", help="build under DIR/NAME (default: a temp dir)")
    ap.add_argument("--from-report", metavar="DIR", nargs="+",
                    help="build nothing: print the rows of these gru-hw build output folders")
    args = ap.parse_args(argv)
    if args.from_report:
        return from_reports(args.from_report)
    return sweep(args)


if __name__ == "__main__":
    sys.exit(main())
