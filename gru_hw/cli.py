"""The ``gru-hw`` command: argument parsing and messages only; the work happens in the library.

Exit statuses: 0 success; 1 a failed check (RTL differs from golden, design does not fit);
2 a user mistake (bad file, bad flag value, unsupported model feature), printed on one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import GruHwError

EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2


class CheckFailed(Exception):
    """A check the user asked for did not pass (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {value}")
        return value

    return parse


def _add_quant_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quantization")
    g.add_argument("--weight-bits", type=_positive_int("--weight-bits"), metavar="B",
                   help="bits per weight (default 16)")
    g.add_argument("--act-bits", type=_positive_int("--act-bits"), metavar="B",
                   help="bits of inputs, hidden state and gate outputs (default 16)")
    g.add_argument("--qconfig", metavar="FILE.json", help="a full QuantSpec, as written by generate")
    g.add_argument("--calibrate", metavar="INPUTS", help="choose activation ranges from these inputs")
    g.add_argument("--pwl-segments", type=_positive_int("--pwl-segments"), metavar="S",
                   help="PWL segments over the whole range, a power of two >= 2 (default 64)")


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help=".pt/.pth, .onnx, .keras/.h5 or .npz")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``gru-hw`` command."""
    parser = _Parser(prog="gru-hw", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gru-hw {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("info", help="sizes, formats, PWL error, schedule and resources of a model")
    _add_model(p)
    p.add_argument("--lanes", type=_positive_int("--lanes"), default=None, metavar="P")
    p.add_argument("--steps", type=_positive_int("--steps"), default=None, metavar="T")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--target-accuracy-drop", type=float, metavar="POINTS",
                   help="with --calibrate: recommend the narrowest formats losing at most this much "
                        "accuracy (needs 'labels' in INPUTS)")
    p.add_argument("--target-error", type=float, metavar="E",
                   help="with --calibrate: recommend the narrowest formats with max |y - y_float| <= E")
    _add_quant_flags(p)

    p = sub.add_parser("golden", help="run the reference model (bit-exact fixed point, or float)")
    _add_model(p)
    p.add_argument("inputs", metavar="INPUTS")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    p.add_argument("--float", action="store_true", help="the float model instead of fixed point")
    p.add_argument("--sequence", action="store_true", help="also write h (N, T, H)")
    p.add_argument("--keep-state", action="store_true",
                   help="sequences are consecutive chunks of one stream")
    p.add_argument("--json", action="store_true")
    _add_quant_flags(p)

    p = sub.add_parser("generate", help="Verilog for the core, spec.json and memory files")
    _add_model(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--lanes", type=_positive_int("--lanes"), default=None, metavar="P")
    p.add_argument("--sequence", action="store_true", help="emit the hidden state every step")
    p.add_argument("--runtime-weights", action="store_true",
                   help="add the weight stream port w_stream (see spec.json weights) and write weights.npz")
    _add_quant_flags(p)

    p = sub.add_parser("simulate", help="run the generated hardware and compare with golden")
    _add_model(p)
    p.add_argument("inputs", metavar="INPUTS")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    p.add_argument("--simulator", choices=("verilator", "icarus", "amaranth"), default="verilator")
    p.add_argument("--lanes", type=_positive_int("--lanes"), default=None, metavar="P")
    p.add_argument("--sequence", action="store_true")
    p.add_argument("--keep-state", action="store_true")
    p.add_argument("--runtime-weights", action="store_true",
                   help="simulate the core with the weight port, its weights loaded through it")
    p.add_argument("--waves", metavar="DIR", help="write a waveform into DIR")
    p.add_argument("--build-dir", metavar="DIR", help="where the simulator builds (default: a temp dir)")
    p.add_argument("--json", action="store_true")
    _add_quant_flags(p)

    p = sub.add_parser("build", help="bitstream and report.json for a board")
    _add_model(p)
    p.add_argument("--board", required=True, metavar="BOARD")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--lanes", type=_positive_int("--lanes"), default=None, metavar="P")
    p.add_argument("--clock-mhz", type=float, default=None, metavar="F",
                   help="core clock (default: per board; lowered to the routed Fmax if missed)")
    p.add_argument("--baud", type=_positive_int("--baud"), default=None, help="UART baud rate")
    p.add_argument("--runtime-weights", action="store_true",
                   help="weights loadable over the UART (gru-hw run --load-weights)")
    p.add_argument("--seeds", type=_positive_int("--seeds"), default=None, metavar="N",
                   help="if routing misses the clock, place and route again with nextpnr seeds "
                        "2..N (stopping when met) and keep the best (default: per board)")
    p.add_argument("--json", action="store_true")
    _add_quant_flags(p)

    p = sub.add_parser("flash", help="program the board a build was made for")
    p.add_argument("build_dir", metavar="DIR")
    p.add_argument("--dry-run", action="store_true", help="print the command only")

    p = sub.add_parser("run", help="run INPUTS on a flashed board over its UART")
    p.add_argument("inputs", metavar="INPUTS")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    p.add_argument("--port", required=True, metavar="DEVICE")
    p.add_argument("--build-dir", metavar="DIR", help="the build the board holds (for --check)")
    p.add_argument("--model", metavar="MODEL", help="the model, for --check")
    p.add_argument("--check", action="store_true", help="compare the outputs with golden")
    p.add_argument("--keep-state", action="store_true")
    p.add_argument("--load-weights", action="store_true",
                   help="first load --model's weights into a --runtime-weights build "
                        "(needs --build-dir)")
    p.add_argument("--baud", type=_positive_int("--baud"), default=None)

    p = sub.add_parser("demo", help="the main job on the shipped example model")
    p.add_argument("-o", "--output", default="demo-out", metavar="DIR")
    p.add_argument("--quick", action="store_true", help="skip the board build")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


# ---- shared helpers ------------------------------------------------------------------------------
def load_model(path: str):
    """Load a MODEL file (any supported format)."""
    from .importers import load_model as _load

    return _load(path)


def _refuse_with(args: argparse.Namespace, option: str, flags: tuple[str, ...]) -> None:
    """Raise if any of ``flags`` was given together with ``option``."""
    for flag in flags:
        if getattr(args, flag, None) is not None:
            raise GruHwError(f"{option} cannot be combined with --{flag.replace('_', '-')}")


def _model_spec_lanes(args: argparse.Namespace):
    """Load MODEL, resolve the quant flags and the lane count (default: up to 8)."""
    model = load_model(args.model)
    spec = resolve_spec(model, args)
    lanes = args.lanes if args.lanes is not None else _default_lanes(model)
    return model, spec, lanes


def resolve_spec(model, args: argparse.Namespace):
    """Return the QuantSpec the quant flags ask for."""
    from .io import load_inputs
    from .quant import QuantSpec, choose_spec

    if args.qconfig:
        _refuse_with(args, "--qconfig", ("weight_bits", "act_bits", "calibrate", "pwl_segments"))
        spec = QuantSpec.load(args.qconfig)
        spec.validate(model, where=args.qconfig)
        return spec
    calibration = None
    if args.calibrate:
        calibration, lengths = load_inputs(args.calibrate, model.input_size)
        if lengths is not None:
            mask = np.arange(calibration.shape[1])[None, :] < lengths[:, None]
            calibration = calibration[mask]
    seg_log2 = 5
    if args.pwl_segments is not None:
        s = args.pwl_segments
        if s < 2 or s & (s - 1) or s > 8192:
            raise GruHwError(f"--pwl-segments must be a power of two in 2..8192, got {s}")
        seg_log2 = s.bit_length() - 2
    kwargs = {}
    if args.weight_bits is not None:
        kwargs["weight_bits"] = args.weight_bits
    if args.act_bits is not None:
        kwargs["act_bits"] = args.act_bits
    return choose_spec(model, calibration=calibration, seg_log2=seg_log2, **kwargs)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _default_lanes(model) -> int:
    return min(8, 3 * min(layer.hidden_size for layer in model.layers))


# ---- commands ------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    from .report import model_info

    model, spec, lanes = _model_spec_lanes(args)
    info = model_info(model, spec, lanes=lanes, steps=args.steps)
    text_extra = ""
    if args.target_accuracy_drop is not None or args.target_error is not None:
        if not args.calibrate:
            raise GruHwError("--target-accuracy-drop / --target-error need --calibrate INPUTS")
        if args.target_accuracy_drop is not None and args.target_error is not None:
            raise GruHwError("give either --target-accuracy-drop or --target-error, not both")
        for flag, v in (("--target-accuracy-drop", args.target_accuracy_drop),
                        ("--target-error", args.target_error)):
            if v is not None and not (np.isfinite(v) and v >= 0):
                raise GruHwError(f"{flag} must be a finite number >= 0, got {v}")
    if args.calibrate:
        from .calibrate import format_report, point_report, recommend
        from .io import load_inputs, load_labels

        x, lengths = load_inputs(args.calibrate, model.input_size)
        labels = load_labels(args.calibrate, x.shape[0])
        rows = point_report(model, spec, x, lengths)
        rec = recommend(model, x, lengths, labels=labels, target_accuracy_drop=args.target_accuracy_drop,
                        target_error=args.target_error)
        info["calibration"] = {"points": rows, "recommendation": rec}
        text_extra = "\n" + format_report(rows, rec)
    if args.json:
        _print_json(info)
    else:
        from .report import format_info

        print(format_info(info) + text_extra)
    return 0


def cmd_golden(args: argparse.Namespace) -> int:
    from .golden import float_forward, int_forward
    from .io import load_inputs, save_outputs
    from .quant import quantize_model

    model = load_model(args.model)
    x, lengths = load_inputs(args.inputs, model.input_size)
    if args.float:
        _refuse_with(args, "--float",
                     ("weight_bits", "act_bits", "qconfig", "calibrate", "pwl_segments"))
        res = float_forward(model, x, lengths, sequence=args.sequence, keep_state=args.keep_state)
    else:
        spec = resolve_spec(model, args)
        qm = quantize_model(model, spec)
        res = int_forward(qm, x, lengths, sequence=args.sequence, keep_state=args.keep_state)
    save_outputs(args.output, y=res.y, h=res.h)
    summary = {
        "output": args.output,
        "sequences": int(x.shape[0]),
        "steps": int(x.shape[1]),
        "mode": "float" if args.float else "fixed",
        "saturations": {k: v for k, v in res.saturations.items()},
    }
    if args.json:
        _print_json(summary)
    else:
        sats = {k: v for k, v in res.saturations.items() if v}
        sat_text = ", ".join(f"{k}: {v}" for k, v in sats.items()) if sats else "none"
        print(f"{summary['mode']} golden: {x.shape[0]} sequence(s) of up to {x.shape[1]} steps "
              f"-> {args.output}")
        if not args.float:
            print(f"saturations: {sat_text}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate
    from .quant import quantize_model

    model, spec, lanes = _model_spec_lanes(args)
    qm = quantize_model(model, spec)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise GruHwError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    info = generate(qm, out, lanes=lanes, sequence=args.sequence,
                    runtime_weights=args.runtime_weights)
    sched = info.get("schedule", {})
    print(f"generated {out / 'gru_core.v'} and {out / 'spec.json'}: {model.describe()}, "
          f"{lanes} lane(s), {sched.get('cycles_per_step', '?')} cycles/step")
    if args.runtime_weights:
        w = info["weights"]
        print(f"weight port w_stream: {w['words']} words of {w['data_width']} bits "
              f"({w['addr_width']}-bit addresses), CRC-16 0x{w['checksum_crc16']:04x}; "
              f"this model's words in {out / w['file']}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import run_simulation

    model, spec, lanes = _model_spec_lanes(args)
    result = run_simulation(
        model, spec, args.inputs, args.output, simulator=args.simulator, lanes=lanes,
        sequence=args.sequence, keep_state=args.keep_state, runtime_weights=args.runtime_weights,
        waves=args.waves, build_dir=args.build_dir,
    )
    if args.json:
        _print_json(result)
    if not result["match"]:
        raise CheckFailed(result["mismatch"])
    if not args.json:
        loaded = " (weights loaded through the weight port)" if args.runtime_weights else ""
        print(f"{args.simulator}: {result['sequences']} sequence(s), all outputs equal golden "
              f"(bit-exact){loaded}; {result['cycles_mean']:.1f} cycles/sequence mean "
              f"-> {args.output}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from .board import DoesNotFit, TimingNotMet, build
    from .quant import quantize_model

    model, spec, lanes = _model_spec_lanes(args)
    qm = quantize_model(model, spec)
    kwargs = {"lanes": lanes}
    if args.clock_mhz is not None:
        if not (np.isfinite(args.clock_mhz) and 1.0 <= args.clock_mhz <= 500.0):
            raise GruHwError(f"--clock-mhz must be within 1..500, got {args.clock_mhz}")
        kwargs["clock_mhz"] = args.clock_mhz
    if args.baud is not None:
        kwargs["baud"] = args.baud
    if args.runtime_weights:
        kwargs["runtime_weights"] = True
    if args.seeds is not None:
        kwargs["seeds"] = args.seeds
    try:
        report = build(qm, args.board, args.output, **kwargs)
    except (DoesNotFit, TimingNotMet) as exc:  # a failed check, not a usage mistake
        raise CheckFailed(str(exc)) from None
    if args.json:
        _print_json(report)
    return 0


def cmd_flash(args: argparse.Namespace) -> int:
    from .board import flash

    cmd = flash(args.build_dir, dry_run=args.dry_run)
    if args.dry_run:
        print(" ".join(cmd))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .board import run_inputs

    result = run_inputs(args)
    if args.check and not result.get("match", True):
        raise CheckFailed(result["mismatch"])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.output, quick=args.quick)


COMMANDS = {
    "info": cmd_info, "golden": cmd_golden, "generate": cmd_generate, "simulate": cmd_simulate,
    "build": cmd_build, "flash": cmd_flash, "run": cmd_run, "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except GruHwError as exc:
        print(f"gru-hw {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CheckFailed as exc:
        print(f"gru-hw {args.command}: check failed: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except KeyboardInterrupt:
        print(f"gru-hw {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
