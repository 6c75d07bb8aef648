"""The ``gru-hw`` command: argument parsing and messages only; the work happens in the library.

Exit statuses: 0 success; 1 a failed check (RTL differs from golden, design does not fit);
2 a user mistake (bad file, bad flag value, unsupported model feature), printed on one line.

Every path a command writes is checked before any work starts (:mod:`gru_hw.io`), and the
library writes atomically, so a failed command leaves nothing behind. Only this module prints
and knows the flag names; the library takes callbacks for progress.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import GruHwError
from .simulate import SIMULATORS

EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
#: info --steps: the schedule is stepped through once per step (a few seconds at the most).
MAX_STEPS = 100_000

DESCRIPTION = (
    "Turn a trained GRU (PyTorch, ONNX, Keras or .npz) into bit-exact fixed-point inference "
    "hardware for an FPGA: choose and check the number formats, run the reference model, "
    "generate and simulate the Verilog, build a bitstream and run it on the board."
)

EPILOG = """\
examples:
  gru-hw info model.pt                              sizes, formats, cycles and resources
  gru-hw info model.pt --calibrate train.npz --target-accuracy-drop 0.5
                                                    the narrowest formats that keep accuracy
  gru-hw golden model.pt inputs.npz -o ref.npz      the bit-exact fixed-point outputs
  gru-hw generate model.pt -o core                  Verilog, spec.json and qconfig.json in core/
  gru-hw simulate model.pt inputs.npz -o sim.npz    the Verilog, checked against golden
  gru-hw qat model.pt train.npz -o qat --weight-bits 2 --act-bits 8
                                                    quantization-aware training, bit-exact
  gru-hw build model.pt --board icebreaker -o build
  gru-hw flash build
  gru-hw run inputs.npz -o out.npz --port /dev/ttyUSB1 --build-dir build --model model.pt --check
  gru-hw demo --quick                               the whole flow on the shipped example

MODEL is .pt/.pth (a state_dict), .onnx, .keras/.h5 or .npz; INPUTS is .npz with x (N, T, I)
and optional lengths (N,), or .npy. `gru-hw COMMAND --help` lists a command's options.
Exit status: 0 done, 1 a failed check (hardware differs from golden, design does not fit),
2 a mistake in the command line or a file (the one-line message says which).
"""


class CheckFailed(Exception):
    """A check the user asked for did not pass (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())}\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


# ---- flag value types (argparse prefixes "argument --flag: " to these messages) ------------------
def _int_in(lo: int, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            what = f"in {lo}..{hi}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"must be an integer {what}, got {value}")
        return value

    return parse


def _power_of_two(lo: int, hi: int):
    def parse(text: str) -> int:
        value = _int_in(lo, hi)(text)
        if value & (value - 1):
            raise argparse.ArgumentTypeError(f"must be a power of two in {lo}..{hi}, got {value}")
        return value

    return parse


def _number(lo: float, hi: float | None = None):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not np.isfinite(value) or value < lo or (hi is not None and value > hi):
            what = f"within {lo:g}..{hi:g}" if hi is not None else f">= {lo:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {what}, got {text}")
        return value

    return parse


# ---- the parser ----------------------------------------------------------------------------------
def _add_quant_flags(p: argparse.ArgumentParser) -> None:
    from .quant import ACT_BITS_RANGE, DEFAULT_ACT_BITS, DEFAULT_WEIGHT_BITS, WEIGHT_BITS_RANGE

    g = p.add_argument_group("quantization (the same on every command)")
    g.add_argument("--weight-bits", type=_int_in(*WEIGHT_BITS_RANGE), metavar="B",
                   help=f"bits per weight, {WEIGHT_BITS_RANGE[0]}..{WEIGHT_BITS_RANGE[1]} "
                        f"(default: {DEFAULT_WEIGHT_BITS})")
    g.add_argument("--act-bits", type=_int_in(*ACT_BITS_RANGE), metavar="B",
                   help=f"bits of the inputs, hidden state and gate outputs, "
                        f"{ACT_BITS_RANGE[0]}..{ACT_BITS_RANGE[1]} (default: {DEFAULT_ACT_BITS})")
    g.add_argument("--qconfig", metavar="FILE.json",
                   help="every format from a file: the qconfig.json that generate writes (or its "
                        "spec.json); not combined with the other quantization flags (default: "
                        "formats chosen from the model's weights)")
    g.add_argument("--calibrate", metavar="INPUTS",
                   help="size the input format to the largest |x| in these inputs (same form as "
                        "INPUTS; any scale, e.g. raw 16-bit audio) (default: inputs within ±8)")
    g.add_argument("--pwl-segments", type=_power_of_two(2, 8192), metavar="S",
                   help="segments of the piecewise-linear sigmoid and tanh over their whole "
                        "range, a power of two in 2..8192 (default: 64)")


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="the trained model: .pt/.pth (state_dict), .onnx, .keras/.h5 or .npz")


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", metavar="INPUTS",
                   help=".npz with x (N, T, I) and optional lengths (N,), or .npy (N, T, I)/(T, I)")


def _add_lanes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lanes", type=_int_in(1), default=None, metavar="P",
                   help="multiply-accumulate lanes, 1..3 x the largest hidden size (default: "
                        "3 x the smallest hidden size, at most 8)")


def _add_board(p: argparse.ArgumentParser, required: bool = False) -> None:
    from .boards import BOARDS

    names = ", ".join(BOARDS)
    if required:
        p.add_argument("--board", required=True, metavar="BOARD",
                       help=f"one of {names} (required)")
    else:
        p.add_argument("--board", default=None, metavar="BOARD",
                       help=f"build the core exactly as `build --board BOARD` does (that board "
                            f"family's profile: multipliers, memories, registers), one of {names} "
                            "(default: the \"dsp\" profile, with the tail on hard multipliers)")


def _tail_width(text: str):
    if text == "auto":
        return None
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1 or (k != 1 and k % 3):
        raise argparse.ArgumentTypeError(f"must be auto, 1 or a multiple of 3, got {text!r}")
    return k


def _add_tail_width(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tail-width", type=_tail_width, default=None, metavar="K",
                   help="gate rows the accumulator chain hands the nonlinear tail per cycle: 1, "
                        "or 3U (U hidden units per cycle, with 5U more multipliers); with many "
                        "lanes a wider tail shortens the step (auto: with --board, the widest "
                        "that pays and fits the board's hard multipliers; without, 1) "
                        "(default: auto)")


def _add_streams(p: argparse.ArgumentParser, what: str = "") -> None:
    from .config import MAX_STREAMS

    p.add_argument("--streams", type=_int_in(1, MAX_STREAMS), default=None, metavar="S",
                   help=f"interleaved independent sequences the core serves, 1..{MAX_STREAMS}: a "
                        "hidden state per stream and a stream id on every beat, so one stream's "
                        "step fills the lanes while another's waits on its recurrence" + what +
                        " (default: 1)")


def _streams(args: argparse.Namespace) -> int:
    s = getattr(args, "streams", None)
    return 1 if s is None else s


def _stream_kwargs(args: argparse.Namespace) -> dict:
    """``streams=S`` for the board helpers, only when S > 1 (one stream is their default)."""
    s = _streams(args)
    return {"streams": s} if s > 1 else {}


def _add_weight_memory(p: argparse.ArgumentParser, build: bool = False) -> None:
    p.add_argument("--weight-memory", choices=("auto", "bram", "spram"), default="auto",
                   help="where the MAC lanes' weights live: bram (block RAM, in the bitstream), "
                        "spram (iCE40 UltraPlus SPRAM, loaded from the board's flash at power-up"
                        + ("; the build writes the image and flash writes both" if build else
                           "; simulated with Yosys's SB_SPRAM256KA model, loaded through the "
                           "weight port first") +
                        "), auto (block RAM if the model fits there, else SPRAM; without "
                        "--board: bram) (default: auto)")


def _weight_memory(args: argparse.Namespace, qm, lanes: int, runtime_weights: bool = False) -> str:
    """Return the weight memory of --weight-memory (auto: the board build's choice)."""
    wm = getattr(args, "weight_memory", "auto")
    if wm != "auto":
        return wm
    if getattr(args, "board", None) is None:
        return "bram"
    from .fit import resolve_weight_memory

    return resolve_weight_memory(qm, args.board, lanes, runtime_weights=runtime_weights,
                                 tail_width=getattr(args, "tail_width", None))[0]


def _add_json(p: argparse.ArgumentParser, what: str = "the summary") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON (default: text)")


def _add_quiet(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="no progress bars (they appear only when stderr is a terminal)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``gru-hw`` command."""
    parser = _Parser(prog="gru-hw", description=textwrap.fill(DESCRIPTION, 96), epilog=EPILOG,
                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"gru-hw {_version()}")
    _add_quiet(parser, False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="COMMAND", title="commands")

    def command(name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, formatter_class=_Formatter,
                           description=textwrap.fill(description or summary, 96))
        _add_quiet(p, argparse.SUPPRESS)  # also accepted after the command
        return p

    _parse_info(command)
    _parse_golden(command)
    _parse_generate(command)
    _parse_qat(command)
    _parse_simulate(command)
    _parse_build(command)
    _parse_flash(command)
    _parse_run(command)
    _parse_demo(command)
    return parser


def _parse_info(command) -> None:
    """Add the ``info`` command."""
    p = command("info", "sizes, formats, PWL error, cycles and resources of a model",
                "Print a model's sizes and variant, the fixed-point formats the flags choose, the "
                "exhaustively measured sigmoid/tanh error, exact cycles per step, multipliers and "
                "memory bits. With --calibrate, also the range, SQNR and saturations at every "
                "requantization point, and the narrowest formats that meet a target.")
    _add_model(p)
    _add_lanes(p)
    _add_board(p)
    _add_weight_memory(p)
    _add_tail_width(p)
    _add_streams(p, "; also gives the cycles per stream-step")
    p.add_argument("--steps", type=_int_in(1, MAX_STEPS), default=None, metavar="T",
                   help=f"also give the exact cycles of a T-step sequence, 1..{MAX_STEPS} "
                        "(default: not shown)")
    _add_json(p, "the report")
    p.add_argument("--target-accuracy-drop", type=_number(0.0), metavar="POINTS",
                   help="with --calibrate: recommend the narrowest formats losing at most this "
                        "many points of accuracy against float (needs 'labels' in INPUTS) "
                        "(default: 0.5 when INPUTS has labels)")
    p.add_argument("--target-error", type=_number(0.0), metavar="E",
                   help="with --calibrate: recommend the narrowest formats with "
                        "max |y - y_float| <= E (default: 0.01 when INPUTS has no labels)")
    _add_quant_flags(p)


def _parse_golden(command) -> None:
    """Add the ``golden`` command."""
    p = command("golden", "run the reference model (bit-exact fixed point, or float)",
                "Run the reference model on INPUTS and write OUT.npz: y (N, O), and h (N, T, H) "
                "with --sequence. The fixed-point model is bit-exact with the hardware.")
    _add_model(p)
    _add_inputs(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz",
                   help="where to write the outputs (required)")
    p.add_argument("--float", action="store_true",
                   help="the float model instead of fixed point (default: fixed point)")
    p.add_argument("--sequence", action="store_true",
                   help="also write h, the top layer's hidden state at every step (default: off)")
    p.add_argument("--keep-state", action="store_true",
                   help="the sequences are consecutive chunks of one stream: do not reset the "
                        "state between them (default: off)")
    _add_json(p)
    _add_quant_flags(p)


def _parse_generate(command) -> None:
    """Add the ``generate`` command."""
    p = command("generate", "Verilog for the core, spec.json and qconfig.json",
                "Write the core's Verilog (gru_core.v), spec.json (formats, schedule, ports) and "
                "qconfig.json (the formats used; give it to --qconfig) into DIR.")
    _add_model(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="output folder, created if missing; files of an earlier generate there "
                        "are replaced (required)")
    _add_lanes(p)
    _add_board(p)
    _add_weight_memory(p)
    _add_tail_width(p)
    p.add_argument("--sequence", action="store_true",
                   help="emit the hidden state every step (default: one output per sequence)")
    p.add_argument("--runtime-weights", action="store_true",
                   help="add the weight stream port w_stream (see spec.json weights) and write "
                        "weights.npz (default: weights fixed in the Verilog)")
    _add_streams(p, "; the payloads gain a stream field (spec.json ports)")
    _add_quant_flags(p)


def _parse_qat(command) -> None:
    """Add the ``qat`` command."""
    from .quant import ACT_BITS_RANGE, DEFAULT_ACT_BITS, DEFAULT_WEIGHT_BITS, WEIGHT_BITS_RANGE

    p = command("qat", "quantization-aware training, bit-exact with the hardware",
                "Fine-tune MODEL on TRAIN with the hardware's integer arithmetic in the loop, keep "
                "the epoch whose exact integer model validates best, and write model.npz and "
                "qconfig.json (use both, with --qconfig) and qat.json into DIR.")
    _add_model(p)
    p.add_argument("train", metavar="TRAIN",
                   help=".npz with x (N, T, I), optional lengths (N,), and labels (N,) for a "
                        "classifier or targets (N, O) for regression")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="output folder, created if missing (required)")
    p.add_argument("--weight-bits", type=_int_in(*WEIGHT_BITS_RANGE), default=DEFAULT_WEIGHT_BITS,
                   metavar="B", help="bits per weight, fixed during training (default: %(default)s)")
    p.add_argument("--act-bits", type=_int_in(*ACT_BITS_RANGE), default=DEFAULT_ACT_BITS,
                   metavar="A", help="bits of inputs, state and gates (default: %(default)s)")
    p.add_argument("--epochs", type=_int_in(1, 10_000), default=40, metavar="N",
                   help="training epochs, 1..10000 (default: %(default)s)")
    p.add_argument("--val", metavar="FILE",
                   help="validation data, same form as TRAIN (default: 20%% of TRAIN held out)")
    p.add_argument("--seed", type=_int_in(0), default=0, metavar="S",
                   help="seed of the split, shuffling and noise (default: %(default)s)")
    _add_json(p)


def _parse_simulate(command) -> None:
    """Add the ``simulate`` command."""
    p = command("simulate", "run the generated hardware and compare it with golden",
                "Simulate the generated core on INPUTS, compare every output with the bit-exact "
                "golden model and write OUT.npz (y, cycles, and h with --sequence). Exit 1 with "
                "the first mismatch.")
    _add_model(p)
    _add_inputs(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz",
                   help="where to write the hardware's outputs (required)")
    p.add_argument("--simulator", choices=SIMULATORS, default=None,
                   help="verilator or icarus run the Verilog under cocotb; amaranth runs the "
                        f"same core in Amaranth's simulator (default: {SIMULATORS[0]}; with "
                        "--netlist, verilator for iCE40 builds and icarus for ECP5)")
    _add_lanes(p)
    _add_board(p)
    _add_weight_memory(p)
    _add_tail_width(p)
    p.add_argument("--netlist", metavar="BUILD_DIR",
                   help="simulate the core as synthesized for the build in BUILD_DIR (Yosys "
                        "netlist with its primitive models, verilator or icarus) instead of its "
                        "Verilog; the build's formats and lanes are used (default: off)")
    p.add_argument("--sequence", action="store_true",
                   help="compare (and write) the hidden state of every step (default: off)")
    p.add_argument("--keep-state", action="store_true",
                   help="the sequences are consecutive chunks of one stream (default: off)")
    p.add_argument("--runtime-weights", action="store_true",
                   help="simulate the core with the weight port, its weights loaded through it "
                        "(default: off)")
    p.add_argument("--waves", metavar="DIR",
                   help="write a waveform into DIR (default: none, except on a mismatch)")
    p.add_argument("--build-dir", metavar="DIR",
                   help="where the simulator builds, kept for reuse (default: a temporary "
                        "folder, removed afterwards)")
    _add_streams(p, "; sequence n of INPUTS runs on stream n %% S, the streams' beats "
                    "interleaved (--interleave), each output checked against its stream's "
                    "golden")
    p.add_argument("--interleave", choices=("round_robin", "random", "blocks"),
                   default="round_robin",
                   help="with --streams: how the streams' beats are sent: round_robin (one step "
                        "of each stream in turn), random (--seed), blocks (each sequence whole) "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=_int_in(0), default=0, metavar="N",
                   help="seed of --interleave random (default: %(default)s)")
    _add_json(p)
    _add_quant_flags(p)


def _parse_build(command) -> None:
    """Add the ``build`` command."""
    p = command("build", "bitstream and report.json for a board",
                "Synthesize, place and route the core with the UART link for BOARD; write the "
                "bitstream, report.json (Fmax, utilization, latency) and a table into DIR.")
    _add_model(p)
    _add_board(p, required=True)
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="output folder, created if missing (required)")
    _add_lanes(p)
    p.add_argument("--clock-mhz", type=_number(1.0, 500.0), default=None, metavar="F",
                   help="core clock in MHz, 1..500 (default: the board's; lowered to the routed "
                        "Fmax if missed)")
    p.add_argument("--baud", type=_int_in(1), default=None, metavar="RATE",
                   help="UART baud rate (default: the board's)")
    p.add_argument("--runtime-weights", action="store_true",
                   help="weights loadable over the UART with run --load-weights (default: off)")
    _add_weight_memory(p, build=True)
    _add_tail_width(p)
    _add_streams(p)
    p.add_argument("--seeds", type=_int_in(1, 100), default=None, metavar="N",
                   help="if routing misses the clock, place and route again with nextpnr seeds "
                        "2..N (stopping when met) and keep the best (default: per board)")
    p.add_argument("--target-accuracy-drop", type=_number(0.0), metavar="POINTS",
                   help="without --lanes and widths: only formats losing at most this many "
                        "points of accuracy against float on --calibrate INPUTS (with 'labels') "
                        "(default: no budget, the widest formats that allow the fastest build)")
    p.add_argument("--target-error", type=_number(0.0), metavar="E",
                   help="without --lanes and widths: only formats with max |y - y_float| <= E "
                        "on --calibrate INPUTS (default: no budget)")
    p.add_argument("--verify", type=_int_in(0, 1000), default=0, metavar="N",
                   help="after the build, simulate the synthesized core (gate-level netlist) on N "
                        "random sequences against golden; exit 1 on a difference (default: 0, "
                        "off)")
    _add_json(p, "report.json")
    _add_quant_flags(p)


def _parse_flash(command) -> None:
    """Add the ``flash`` command."""
    p = command("flash", "program the board a build was made for")
    p.add_argument("build_dir", metavar="DIR", help="the output folder of gru-hw build")
    p.add_argument("--dry-run", action="store_true",
                   help="print the programming command instead of running it (default: off)")


def _parse_run(command) -> None:
    """Add the ``run`` command."""
    p = command("run", "run INPUTS on a flashed board over its UART",
                "Send INPUTS to a flashed board over its UART link and write its outputs to "
                "OUT.npz (y, cycles).")
    _add_inputs(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT.npz",
                   help="where to write the board's outputs (required)")
    p.add_argument("--port", required=True, metavar="DEVICE",
                   help="the board's serial port, e.g. /dev/ttyUSB1 (required)")
    p.add_argument("--build-dir", metavar="DIR",
                   help="the build the board holds: its baud rate and formats (default: none)")
    p.add_argument("--model", metavar="MODEL",
                   help="the model the board must hold; needed by --check and --load-weights "
                        "(default: not checked)")
    p.add_argument("--check", action="store_true",
                   help="compare every output with golden; exit 1 on a difference (default: off)")
    p.add_argument("--keep-state", action="store_true",
                   help="the sequences are consecutive chunks of one stream (default: off)")
    p.add_argument("--streams", type=_int_in(1, 255), default=None, metavar="S",
                   help="deal the sequences to the board's streams 0..S-1 in order (sequence n on "
                        "stream n %% S; with --keep-state each continues its own stream's "
                        "state); the board must have been built with --streams S or more "
                        "(default: 1)")
    p.add_argument("--load-weights", action="store_true",
                   help="first load --model's weights into a --runtime-weights build (needs "
                        "--build-dir) (default: off)")
    p.add_argument("--baud", type=_int_in(1), default=None, metavar="RATE",
                   help="UART baud rate (default: the build's, or 115200 without --build-dir)")


def _parse_demo(command) -> None:
    """Add the ``demo`` command."""
    p = command("demo", "the main job on the shipped example model",
                "Import the shipped JapaneseVowels classifier, choose formats, generate and "
                "simulate the Verilog, build iCEBreaker bitstreams, and write a summary and a "
                "figure into DIR.")
    p.add_argument("-o", "--output", default="demo-out", metavar="DIR",
                   help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="skip the board builds (default: off)")

def _version() -> str:
    from . import __version__

    return __version__


# ---- progress ------------------------------------------------------------------------------------
def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _Bar:
    """A progress bar on stderr fed by a library ``progress(done, total)`` callback.

    Shown only when stderr is a terminal and ``--quiet`` is not given; cleared when done.
    """

    def __init__(self, args: argparse.Namespace, desc: str, unit: str) -> None:
        self.enabled = not getattr(args, "quiet", False) and _stderr_is_terminal()
        self.desc, self.unit = desc, unit
        self.bar = None

    def __enter__(self) -> "_Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr,
                            leave=False, dynamic_ncols=True)
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---- shared helpers ------------------------------------------------------------------------------
def load_model(path: str):
    """Load a MODEL file (any supported format)."""
    from .importers import load_model as _load

    return _load(path)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _refuse_with(args: argparse.Namespace, option: str, flags: tuple[str, ...]) -> None:
    """Raise if any of ``flags`` was given together with ``option``."""
    for flag in flags:
        if getattr(args, flag, None) is not None:
            raise GruHwError(f"{option} cannot be combined with {_flag(flag)}")


def _model_spec_lanes(args: argparse.Namespace):
    """Load MODEL, resolve the quant flags and the lane count (default: up to 8)."""
    model = load_model(args.model)
    if args.lanes is not None:
        from .schedule import Shapes

        limit = Shapes.of(model).max_lanes
        if args.lanes > limit:
            raise GruHwError(f"--lanes must be in 1..{limit} for {args.model} (3 x its largest "
                             f"hidden size), got {args.lanes}")
    spec = resolve_spec(model, args)
    lanes = args.lanes if args.lanes is not None else _default_lanes(model)
    return model, spec, lanes


def resolve_spec(model, args: argparse.Namespace):
    """Return the QuantSpec the quant flags ask for."""
    from .io import load_inputs
    from .quant import DatapathTooWide, QuantSpec, check_datapath, choose_spec, quantize_model

    if args.qconfig:
        _refuse_with(args, "--qconfig", ("weight_bits", "act_bits", "calibrate", "pwl_segments"))
        spec = QuantSpec.load(args.qconfig)
        spec.validate(model, where=args.qconfig)
        try:
            check_datapath(quantize_model(model, spec))
        except DatapathTooWide as exc:
            raise GruHwError(f"{args.qconfig}: too wide for {args.model}: {exc.detail}") from None
        return spec
    calibration = None
    if args.calibrate:
        calibration, lengths = load_inputs(args.calibrate, model.input_size)
        if lengths is not None:
            mask = np.arange(calibration.shape[1])[None, :] < lengths[:, None]
            calibration = calibration[mask]
    seg_log2 = 5 if args.pwl_segments is None else args.pwl_segments.bit_length() - 2
    kwargs = {}
    if args.weight_bits is not None:
        kwargs["weight_bits"] = args.weight_bits
    if args.act_bits is not None:
        kwargs["act_bits"] = args.act_bits
    try:
        return choose_spec(model, calibration=calibration, seg_log2=seg_log2,
                           calibration_name=args.calibrate or "calibration inputs", **kwargs)
    except DatapathTooWide as exc:
        raise GruHwError(f"{args.model}: the weights are too large for these formats: "
                         f"{exc.detail}; use fewer --act-bits or --weight-bits") from None


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


def _board_profile(args: argparse.Namespace, qm, lanes: int, **kwargs):
    """Return the core profile ``build --board`` would use (without --board: None, or the
    default profile with --tail-width)."""
    tail_width = getattr(args, "tail_width", None)
    if getattr(args, "board", None) is None:
        if tail_width is None:
            return None
        from .config import DEFAULT_PROFILE

        return DEFAULT_PROFILE.with_(tail_width=tail_width)
    from .boards.family import core_config_for

    return core_config_for(qm, args.board, lanes, tail_width=tail_width,
                           **_stream_kwargs(args), **kwargs).profile


def _default_lanes(model) -> int:
    return min(8, 3 * min(layer.hidden_size for layer in model.layers))


def _check_output_file(path: str) -> Path:
    from .io import check_output_file

    return check_output_file(path, ".npz")


def _check_output_dir(path: str) -> Path:
    from .io import check_output_dir

    return check_output_dir(path)


# ---- commands ------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    from .report import model_info

    if args.target_accuracy_drop is not None or args.target_error is not None:
        if not args.calibrate:
            raise GruHwError("--target-accuracy-drop / --target-error need --calibrate INPUTS")
        if args.target_accuracy_drop is not None and args.target_error is not None:
            raise GruHwError("give either --target-accuracy-drop or --target-error, not both")
    from .quant import quantize_model

    model, spec, lanes = _model_spec_lanes(args)
    qm = quantize_model(model, spec)
    profile = _board_profile(args, qm, lanes)
    info = model_info(model, spec, lanes=lanes, steps=args.steps, profile=profile)
    streams_line = ""
    if args.streams is not None:
        from .config import CoreConfig

        sched = CoreConfig(qm, lanes, profile, streams=args.streams).schedule
        info["streams"] = args.streams
        info["cycles_per_round"] = sched.cycles_per_round
        info["cycles_per_stream_step"] = sched.cycles_per_stream_step
        if args.streams > 1:
            streams_line = (f"\n  {args.streams} streams: {sched.cycles_per_stream_step:g} "
                            f"cycles per stream-step ({sched.cycles_per_round} cycles per "
                            f"round-robin round of one step of each stream; one stream alone: "
                            f"{info['cycles_per_step']} cycles/step)")
    fit_line = ""
    if args.board is not None:
        from .fit import resolve_weight_memory, spram_capacity_hint

        info["board"] = args.board
        wm, est = resolve_weight_memory(qm, args.board, lanes, requested=args.weight_memory,
                                        tail_width=args.tail_width)
        info["fit"] = est.to_json()
        verdict = ("fits" if est.fits and not est.tight else "fits, tightly" if est.fits
                   else "does not fit: " + ", ".join(f"{k.upper()} {v} over"
                                                      for k, v in est.over.items()))
        fit_line = f"\n  {args.board}: {verdict} ({est.describe()}, profile {est.profile})"
        if wm == "spram" and est.fits:
            fit_line += ("\n  weights in SPRAM: the board loads them from its flash at power-up "
                         "(gru-hw build writes the image, gru-hw flash writes it)")
        if not est.fits and "spram" in est.over:
            hint = spram_capacity_hint(qm, args.board, lanes)
            info["fit"]["hint"] = hint
            fit_line += f"\n  {hint}"
    text_extra = ""
    if args.calibrate:
        from .calibrate import format_report, point_report, recommend
        from .io import load_inputs, load_labels

        x, lengths = load_inputs(args.calibrate, model.input_size)
        labels = load_labels(args.calibrate, x.shape[0])
        if args.target_accuracy_drop is not None and labels is None:
            raise GruHwError(f"{args.calibrate}: --target-accuracy-drop needs 'labels' (N,) "
                             "in this file")
        rows = point_report(model, spec, x, lengths)
        with _Bar(args, "calibrating", "width") as bar:
            rec = recommend(model, x, lengths, labels=labels,
                            target_accuracy_drop=args.target_accuracy_drop,
                            target_error=args.target_error, calibration_name=args.calibrate,
                            progress=bar)
        text_extra = "\n" + format_report(rows, rec)
        r = rec["recommended"]
        if r is not None:
            # The recommendation was measured with the calibrated input format: keep it.
            r["flags"] = (f"--weight-bits {r['weight_bits']} --act-bits {r['act_bits']} "
                          f"--calibrate {shlex.quote(args.calibrate)}")
            text_extra += f"\n  to use it, give: {r['flags']}"
        info["calibration"] = {"points": rows, "recommendation": rec}
    if args.json:
        _print_json(info)
    else:
        from .report import format_info

        print(format_info(info) + streams_line + fit_line + text_extra)
    return 0


def cmd_golden(args: argparse.Namespace) -> int:
    from .golden import float_forward, int_forward
    from .io import load_inputs, save_outputs
    from .quant import quantize_model

    out = _check_output_file(args.output)
    if args.float:
        _refuse_with(args, "--float",
                     ("weight_bits", "act_bits", "qconfig", "calibrate", "pwl_segments"))
    model = load_model(args.model)
    x, lengths = load_inputs(args.inputs, model.input_size)
    unit = "sequence" if args.keep_state else "step"
    if args.float:
        with _Bar(args, "float golden", unit) as bar:
            res = float_forward(model, x, lengths, sequence=args.sequence,
                                keep_state=args.keep_state, progress=bar)
    else:
        spec = resolve_spec(model, args)
        qm = quantize_model(model, spec)
        with _Bar(args, "fixed golden", unit) as bar:
            res = int_forward(qm, x, lengths, sequence=args.sequence, keep_state=args.keep_state,
                              progress=bar)
    save_outputs(out, y=res.y, h=res.h)
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
    from .generate import QCONFIG_FILE, generate
    from .quant import quantize_model

    out = _check_output_dir(args.output)
    model, spec, lanes = _model_spec_lanes(args)
    qm = quantize_model(model, spec)
    profile = _board_profile(args, qm, lanes, runtime_weights=args.runtime_weights)
    wm = _weight_memory(args, qm, lanes, args.runtime_weights)
    info = generate(qm, out, lanes=lanes, sequence=args.sequence,
                    runtime_weights=args.runtime_weights, profile=profile, weight_memory=wm,
                    streams=_streams(args))
    sched = info.get("schedule", {})
    print(f"generated {out / info.get('verilog', 'gru_core.v')}, spec.json and {QCONFIG_FILE} "
          f"in {out}: {model.describe()}, {lanes} lane(s), "
          f"{sched.get('cycles_per_step', '?')} cycles/step")
    if _streams(args) > 1:
        print(f"{args.streams} interleaved streams (a stream field on i_stream and o_stream): "
              f"{sched.get('cycles_per_stream_step', '?'):g} cycles per stream-step")
    if "weights" in info:
        w = info["weights"]
        print(f"weight port w_stream: {w['words']} words of {w['data_width']} bits "
              f"({w['addr_width']}-bit addresses), CRC-16 0x{w['checksum_crc16']:04x}; "
              f"this model's words in {out / w['file']}")
    if wm == "spram":
        print("weights in SPRAM (SB_SPRAM256KA, no initial contents): load weights.npz through "
              "w_stream before the first input")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import run_simulation

    out = _check_output_file(args.output)
    for flag, path in (("--waves", args.waves), ("--build-dir", args.build_dir)):
        if path is not None:
            try:
                _check_output_dir(path)
            except GruHwError as exc:
                raise GruHwError(f"{flag} {exc}") from None
    if args.netlist is not None:
        _refuse_with(args, "--netlist", ("weight_bits", "act_bits", "qconfig", "calibrate",
                                         "pwl_segments", "lanes", "board"))
        if args.runtime_weights:
            raise GruHwError("--netlist cannot be combined with --runtime-weights (the build's "
                             "core is simulated with the weights it was built with)")
        if args.simulator == "amaranth":
            raise GruHwError("--netlist runs in --simulator verilator or icarus, not amaranth")
        model, spec, lanes, profile = load_model(args.model), None, None, None
        simulator, wm = args.simulator, "bram"  # the build's, read by the netlist run
    else:
        from .quant import quantize_model

        model, spec, lanes = _model_spec_lanes(args)
        qm = quantize_model(model, spec)
        profile = _board_profile(args, qm, lanes, runtime_weights=args.runtime_weights,
                                 sequence=args.sequence)
        wm = _weight_memory(args, qm, lanes, args.runtime_weights)
        simulator = args.simulator or SIMULATORS[0]
    what = "netlist" if args.netlist is not None else simulator
    with _Bar(args, f"simulating ({what})", "sequence") as bar:
        result = run_simulation(
            model, spec, args.inputs, out, simulator=simulator, lanes=lanes,
            sequence=args.sequence, keep_state=args.keep_state,
            runtime_weights=args.runtime_weights, waves=args.waves, build_dir=args.build_dir,
            progress=bar, profile=profile, netlist=args.netlist, weight_memory=wm,
            streams=args.streams, order=args.interleave, seed=args.seed,
        )
    if args.json:
        _print_json(result)
    if not result["match"]:
        raise CheckFailed(result["mismatch"])
    if not args.json:
        loaded = (" (weights loaded through the weight port)" if args.runtime_weights else
                  " (weights in SPRAM, loaded through the weight port)"
                  if result.get("weight_memory") == "spram" else "")
        if args.netlist is not None:
            n = result["netlist"]
            cells = ", ".join(f"{v} {k}" for k, v in sorted(n["cells"].items())
                              if k.startswith(("SB_MAC16", "SB_RAM", "SB_SPRAM", "MULT18",
                                               "DP16KD")))
            loaded = (f" (netlist of {args.netlist}: {n['synth']}, {cells}; primitive models of "
                      f"{n['library']})")
        print(f"{result['simulator']}: {result['sequences']} sequence(s), all outputs equal golden "
              f"(bit-exact){loaded}; {result['cycles_mean']:.1f} cycles/sequence mean "
              f"-> {args.output}")
        if result.get("streams", 1) > 1:
            measured = result["cycles_per_stream_step"]
            model_cps = result["cycles_per_stream_step_model"]
            got = f"{measured:.2f}" if measured is not None else "n/a (one beat)"
            want = f"{model_cps:.2f}" if model_cps is not None else "n/a"
            agree = {True: ", every input beat accepted on the schedule's cycle",
                     False: ", accept cycles differ from the schedule's",
                     None: ""}[result["accepts_match_model"]]
            print(f"{result['streams']} streams, {result['interleave']}: {got} cycles per "
                  f"stream-step measured, {want} by the schedule for these beats{agree}; "
                  f"steady state round-robin {result['cycles_per_stream_step_schedule']:g}")
    return 0


def cmd_qat(args: argparse.Namespace) -> int:
    from .qat import run_qat

    _check_output_dir(args.output)
    with _Bar(args, "training", "epoch") as bar:
        s = run_qat(args.model, args.train, args.output, weight_bits=args.weight_bits,
                    act_bits=args.act_bits, epochs=args.epochs, val_path=args.val,
                    seed=args.seed, progress=bar)
    if args.json:
        _print_json(s)
        return 0
    fmt = (lambda v: f"{100 * v:.1f} %") if s["metric"] == "accuracy" else (lambda v: f"{v:.4g}")
    print(f"validation {s['metric']} ({s['n_val']} sequences): float {fmt(s['float'])}, "
          f"post-training {fmt(s['ptq'])}, QAT {fmt(s['qat'])} (epoch {s['best_epoch']})")
    print(f"wrote {s['files']['model']} and {s['files']['qconfig']}; e.g. gru-hw simulate "
          f"{shlex.quote(s['files']['model'])} INPUTS -o OUT.npz --qconfig "
          f"{shlex.quote(s['files']['qconfig'])}")
    return 0


def _build_candidates(args: argparse.Namespace, model):
    """Return [(qm, lanes)] to try, best first, and say what was chosen and why.

    With no --lanes and no widths, the fastest configuration estimated (before synthesis) to
    fit the board, at the widest formats that allow it; otherwise the configuration asked for, refused
    before synthesis when it is estimated not to fit.
    """
    import copy

    from .fit import WIDTHS, choose, resolve_weight_memory, spram_capacity_hint
    from .quant import quantize_model

    auto = (args.lanes is None and args.weight_bits is None and args.act_bits is None
            and not args.qconfig)
    budget = args.target_accuracy_drop is not None or args.target_error is not None
    if budget and (not auto or not args.calibrate):
        raise GruHwError("--target-accuracy-drop / --target-error choose the widths: give "
                         "--calibrate INPUTS, and no --lanes, --weight-bits, --act-bits or "
                         "--qconfig")
    if not auto:
        model, spec, lanes = _model_spec_lanes(args)
        qm = quantize_model(model, spec)
        wm, est = resolve_weight_memory(qm, args.board, lanes,
                                        runtime_weights=args.runtime_weights,
                                        requested=args.weight_memory,
                                        tail_width=args.tail_width)
        if not est.fits:
            over = ", ".join(f"{k.upper()} {est.used[k]}/{est.available[k]}" for k in est.over)
            try:
                alt = choose(model, args.board, runtime_weights=args.runtime_weights,
                             weight_memory=args.weight_memory, tail_width=args.tail_width)[0]
                hint = f"; would fit: {alt.describe()} (omit --lanes and the width flags)"
            except GruHwError:
                hint = spram_capacity_hint(qm, args.board, lanes)
                hint = f"; {hint}" if hint else ""
            raise CheckFailed(f"{args.board}: {lanes} lanes at {spec.weight_bits}/{spec.act_bits} "
                              f"bits does not fit ({over}, estimated before synthesis){hint}")
        print(f"{args.board}: weights in {wm.upper()}" +
              (" (block RAM cannot hold them; loaded from flash at power-up)"
               if wm == "spram" and args.weight_memory == "auto" else ""))
        return [(qm, lanes, wm)]

    def spec_for(wb, ab):
        a = copy.copy(args)
        a.weight_bits, a.act_bits = wb, ab
        return resolve_spec(model, a)

    widths = WIDTHS
    if budget:
        widths = _widths_within_budget(args, model)
    found = choose(model, args.board, runtime_weights=args.runtime_weights, spec_for=spec_for,
                   widths=widths, weight_memory=args.weight_memory, tail_width=args.tail_width)
    best = found[0]
    print(f"{args.board}: chose {best.describe()}, profile {best.profile}, "
          f"{best.cycles_per_step} cycles/step: the fastest configuration estimated to fit, at "
          f"the widest formats that allow it" + (" (tight: a build that does not fit falls back to the next)"
                           if best.tight else ""))
    return [(quantize_model(model, spec_for(e.weight_bits, e.act_bits)), e.lanes, e.weight_memory)
            for e in found[:3]]


def _widths_within_budget(args: argparse.Namespace, model) -> list[tuple[int, int]]:
    """Return the widths (widest first) at least as wide as the narrowest meeting the budget."""
    from .calibrate import recommend
    from .fit import WIDTHS
    from .io import load_inputs, load_labels

    x, lengths = load_inputs(args.calibrate, model.input_size)
    labels = load_labels(args.calibrate, x.shape[0])
    with _Bar(args, "finding the narrowest formats", "width") as bar:
        rec = recommend(model, x, lengths, labels=labels,
                        target_accuracy_drop=args.target_accuracy_drop,
                        target_error=args.target_error, calibration_name=args.calibrate,
                        progress=bar)["recommended"]
    if rec is None:
        raise CheckFailed(f"no widths up to 24 bits meet the target on {args.calibrate}")
    wb, ab = rec["weight_bits"], rec["act_bits"]
    widths = sorted({w for w in WIDTHS if w[0] >= wb and w[1] >= ab} | {(wb, ab)},
                    key=lambda w: (-w[0] - w[1], -w[0]))
    print(f"{args.calibrate}: {wb}/{ab} bits are the narrowest within the target; choosing "
          f"among {', '.join(f'{a}/{b}' for a, b in widths)}")
    return widths


def cmd_build(args: argparse.Namespace) -> int:
    from .board import DoesNotFit, TimingNotMet, build, get_board

    get_board(args.board)
    _check_output_dir(args.output)
    model = load_model(args.model)
    candidates = _build_candidates(args, model)
    kwargs = {}
    if args.clock_mhz is not None:
        kwargs["clock_mhz"] = args.clock_mhz
    if args.baud is not None:
        kwargs["baud"] = args.baud
    if args.runtime_weights:
        kwargs["runtime_weights"] = True
    if args.seeds is not None:
        kwargs["seeds"] = args.seeds
    for k, (qm, lanes, wm) in enumerate(candidates):
        try:
            report = build(qm, args.board, args.output, lanes=lanes, progress=print,
                           weight_memory=wm, tail_width=args.tail_width,
                           **_stream_kwargs(args), **kwargs)
            break
        except DoesNotFit as exc:
            if k + 1 == len(candidates):
                raise CheckFailed(str(exc)) from None
            nq, nl, _ = candidates[k + 1]
            print(f"{args.board}: {exc}; trying {nl} lanes at {nq.spec.weight_bits}/"
                  f"{nq.spec.act_bits} bits")
        except TimingNotMet as exc:  # a failed check, not a usage mistake
            raise CheckFailed(str(exc)) from None
    if args.verify:
        from .netlist import verify_build

        with _Bar(args, "verifying the synthesized core", "sequence") as bar:
            bar(0, args.verify)
            v = verify_build(args.output, model, args.verify)
            bar(args.verify, args.verify)
        report["verify"] = v
        if not v["match"]:
            raise CheckFailed(f"the synthesized core differs from golden: {v['mismatch']}")
        if not args.json:
            print(f"verify: the synthesized core ({v['synth']}) equals golden on {v['sequences']} "
                  f"random sequences ({v['steps']} steps) in {v['simulator']} with "
                  f"{v['library']}'s primitive models ({v['seconds']:.0f} s)")
    if args.json:
        _print_json(report)
    return 0


def cmd_flash(args: argparse.Namespace) -> int:
    from .board import flash

    cmds = flash(args.build_dir, dry_run=args.dry_run)
    if args.dry_run:
        for cmd in cmds:
            print(" ".join(cmd))
    return 0


def _check_build_dir(build_dir: str, need_baud: bool) -> dict:
    """Read DIR/report.json of a build for ``run``; raise naming the file and key if unusable."""
    d = Path(build_dir)
    rp = d / "report.json"
    if not d.is_dir():
        raise GruHwError(f"--build-dir {d}: no such directory")
    if not rp.is_file():
        raise GruHwError(f"{d}: no report.json (is this a `gru-hw build` output directory?)")
    try:
        report = json.loads(rp.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GruHwError(f"{rp}: cannot read ({exc})") from None
    if not isinstance(report, dict):
        raise GruHwError(f"{rp}: expected a JSON object")
    if need_baud:
        uart = report.get("uart")
        if not isinstance(uart, dict) or not isinstance(uart.get("baud"), int) \
                or isinstance(uart.get("baud"), bool) or uart["baud"] < 1:
            raise GruHwError(f"{rp}: no 'uart' with a 'baud' rate (give --baud, or rebuild)")
    return report


def cmd_run(args: argparse.Namespace) -> int:
    from .io import load_inputs

    _check_output_file(args.output)
    load_inputs(args.inputs)  # readable, finite, (N, T, I): before the port is opened
    if args.check and not args.model:
        raise GruHwError("--check needs --model (and --build-dir if the build used quant flags)")
    if args.load_weights and not (args.model and args.build_dir):
        raise GruHwError("--load-weights needs --model (the weights to load) and --build-dir "
                         "(the run-time-weights build the board holds, for its formats)")
    report = _check_build_dir(args.build_dir, need_baud=args.baud is None) \
        if args.build_dir else None
    if args.load_weights and not report.get("runtime_weights"):
        raise GruHwError(f"--load-weights: the build in {args.build_dir} was made without "
                         "--runtime-weights: its weights are in the bitstream")
    from .board import expected_model, run_on_board
    from .protocol import DEFAULT_BAUD

    baud = args.baud or (report["uart"]["baud"] if report else DEFAULT_BAUD)
    qm = None
    if args.model:
        qm, sat = expected_model(args.model, report, Path(args.build_dir or ".") / "report.json")
        if sat:
            print(f"note: {sat} weight(s) of {args.model} saturated in the build's formats",
                  file=sys.stderr)
    result = run_on_board(args.port, args.inputs, args.output, baud=baud, qm=qm,
                          check=args.check, keep_state=args.keep_state,
                          load_weights=args.load_weights, log=print, streams=args.streams)
    msg = (f"{args.port}: {result['sequences']} sequence(s), mean {result['cycles_mean']:.0f} "
           f"cycles each -> {args.output}")
    if args.check:
        msg += "; all outputs equal golden (bit-exact)" if result["match"] else "; MISMATCH"
    print(msg)
    if args.check and not result["match"]:
        raise CheckFailed(result["mismatch"])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _check_output_dir(args.output)
    return run_demo(args.output, quick=args.quick, log=lambda line: print(line, flush=True))


COMMANDS = {
    "info": cmd_info, "golden": cmd_golden, "generate": cmd_generate, "simulate": cmd_simulate,
    "build": cmd_build, "flash": cmd_flash, "run": cmd_run, "demo": cmd_demo, "qat": cmd_qat,
}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


#: The library names what a message is about (GruHwError.subject); the command line names the flag.
SUBJECT_FLAGS = {"lanes": "--lanes", "seeds": "--seeds", "clock_mhz": "--clock-mhz",
                 "baud": "--baud", "board": "--board", "port": "--port", "output": "--output",
                 "simulator": "--simulator", "load_weights": "--load-weights",
                 "weight_memory": "--weight-memory", "tail_width": "--tail-width",
                 "streams": "--streams", "order": "--interleave"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except GruHwError as exc:
        msg = _one_line(exc)
        flag = SUBJECT_FLAGS.get(getattr(exc, "subject", None))
        if flag is not None and hasattr(args, flag.lstrip("-").replace("-", "_")):
            msg = f"{flag}: {msg}"
        print(f"gru-hw {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except CheckFailed as exc:
        print(f"gru-hw {args.command}: check failed: {_one_line(exc)}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except KeyboardInterrupt:
        print(f"gru-hw {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
