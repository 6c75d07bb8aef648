"""Board flow: bitstream + report.json (``build``), programming (``flash``), and running a flashed
board over its UART (``run_on_board``).

The build elaborates :class:`gru_hw.boards.top.BoardTop` with the board's amaranth-boards platform
and runs the platform's own command list (Yosys, nextpnr, pack) one stage at a time, with the
YoWASP tools unless the user set ``YOSYS``, ``NEXTPNR_ICE40``, ... in the environment. What differs
between FPGA families (synthesis options, tools, bitstream, flashing, resource names, the core
profile) comes from the board's :class:`gru_hw.boards.family.Family`; :func:`core_config_for` is the
core configuration a build makes.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from .boards import BOARDS, FAMILIES, Board, core_config_for, get_board
from .errors import GruHwError
from .protocol import DEFAULT_BAUD

__all__ = ["build", "flash", "run_on_board", "expected_model", "core_config_for", "suggest_lanes", "format_report",
           "tool_command", "DoesNotFit", "TimingNotMet", "BuildFailed", "YOWASP_TOOLS"]

#: Tool -> the YoWASP command used when the user has not set the tool's variable.
YOWASP_TOOLS = {t: y for f in FAMILIES.values() for t, y in f.yowasp_tools.items()}
#: Tools the platforms run besides the families' own (tool -> stage).
_OTHER_STAGES = {"dfu-suffix": "DFU suffix"}


#: The weight image of an SPRAM build, written beside the bitstream.
WEIGHT_IMAGE_FILE = "weights.bin"


def _extract(plan, out: Path) -> None:
    """Write the build plan's files into ``out`` (amaranth's ``plan.extract`` changes the
    process's working directory while it writes, which races with builds in other threads)."""
    for name, content in plan.files.items():
        target = out / name
        assert not Path(name).is_absolute() and ".." not in Path(name).parts
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)


def _stage(b: Board, tool: str) -> str:
    """The build stage ``tool`` runs, for messages."""
    return b.family.tools.get(tool) or _OTHER_STAGES.get(tool, tool)


class DoesNotFit(GruHwError):
    """The design needs more of a resource than the device has (the CLI should exit 1)."""

    def __init__(self, message: str, *, resource: str, used: int, available: int,
                 suggested_lanes: int | None) -> None:
        super().__init__(message)
        self.resource = resource
        self.used = used
        self.available = available
        self.suggested_lanes = suggested_lanes


class TimingNotMet(GruHwError):
    """Routing finished below the requested clock (a failed check: exit status 1)."""


class BuildFailed(GruHwError):
    """A tool of the build failed for a reason other than size (its log is named)."""


def tool_command(tool: str) -> str:
    """Return the command for ``tool``: ``$TOOL``, else YoWASP's, else the name."""
    var = re.sub(r"[^A-Za-z0-9]", "_", tool).upper()
    if os.environ.get(var):
        return os.environ[var]
    name = YOWASP_TOOLS.get(tool, tool)
    local = Path(sys.executable).parent / name  # the venv's own bin/, even when not activated
    if shutil.which(name) is None and local.exists():
        return str(local)
    return name


def _tool_available(cmd: str) -> bool:
    return shutil.which(cmd) is not None or Path(cmd).exists()


def _cycles_per_step(core, qm, lanes: int) -> int:
    """The exact cycles per step of the core as built (its own schedule, tail option included)."""
    if hasattr(core, "schedule"):
        return int(core.schedule.cycles_per_step)
    return int(core.cycles_per_step)


# ---- build ---------------------------------------------------------------------------------------
def build(qm, board: str, out_dir: str | os.PathLike, *, lanes: int,
          progress: Callable[[str], None] | None = None, clock_mhz: float | None = None,
          baud: int = DEFAULT_BAUD, max_steps: int | None = None,
          runtime_weights: bool = False, core=None, suggest: bool = True,
          seeds: int = 1, weight_memory: str = "bram", tail_width: int | None = None,
          streams: int = 1) -> dict:
    """Build a bitstream for ``board`` into ``out_dir``; write and return report.json's dict.

    ``clock_mhz`` is the core clock asked of the PLL (default: the board's); when left to the
    default and routing cannot meet it, the build is redone once at the routed Fmax. ``core``
    replaces the GRU core (tests). A design that does not fit raises :class:`DoesNotFit`, naming
    the resource, how far over, and the largest ``lanes`` estimated to fit. ``runtime_weights``
    builds the weight port and the UART WEIGHTS command in (the bitstream starts with ``qm``'s
    weights; any model of the same shape and QuantSpec can then be loaded: ``gru-hw run
    --load-weights``). ``seeds`` > 1: when place and route misses the clock, it is run again with
    nextpnr seeds 2, 3, ... (up to ``seeds`` runs, stopping at the first that meets the clock) and
    the best routing is kept (report.json's ``pnr_seeds``: seed -> Fmax).

    ``weight_memory="spram"`` (iCE40 UltraPlus) keeps the weights in SPRAM, which the bitstream
    cannot fill: the build also writes the weight image the board loads from its flash at
    power-up (``weights.bin``; report.json's ``weight_image``: file, flash offset, size, CRC) and
    :func:`flash` writes both. ``tail_width``: the core's K (None: the family's choice).
    ``streams`` S > 1: the core keeps S hidden states, and the board's RUN, RUN_KEEP and
    RESET_STATE name a stream (:mod:`gru_hw.protocol`); report.json's ``streams``.
    """
    say = progress or (lambda _msg: None)
    b = get_board(board)
    if not isinstance(lanes, int) or lanes < 1:
        raise GruHwError(f"lanes must be a positive integer, got {lanes!r}", subject="lanes")
    from .config import MAX_STREAMS

    if not isinstance(streams, int) or isinstance(streams, bool) or not 1 <= streams <= MAX_STREAMS:
        raise GruHwError(f"streams must be an integer within 1..{MAX_STREAMS}, got {streams!r}",
                         subject="streams")
    if not isinstance(seeds, int) or not 1 <= seeds <= 100:
        raise GruHwError(f"seeds must be an integer within 1..100, got {seeds!r}",
                         subject="seeds")
    out = Path(out_dir).absolute()  # builds may run in threads: no path may depend on the cwd
    if out.exists() and not out.is_dir():
        raise GruHwError(f"{out}: exists and is not a directory", subject="output")
    out.mkdir(parents=True, exist_ok=True)
    auto_clock = clock_mhz is None
    t0 = time.monotonic()
    report = _build_once(qm, b, out, lanes=lanes, say=say, clock_mhz=clock_mhz, baud=baud,
                         max_steps=max_steps, core=core, suggest=suggest,
                         runtime_weights=runtime_weights, seeds=seeds,
                         weight_memory=weight_memory, tail_width=tail_width, streams=streams)
    if auto_clock and not report["timing_met"]:
        # Routing varies from run to run: leave a 10 % margin so the retry itself meets timing.
        retry = math.floor(report["fmax_mhz"] * 0.90 * 4) / 4
        say(f"timing: {report['fmax_mhz']:.1f} MHz after routing < {report['clock_mhz']:.2f} MHz; "
            f"rebuilding at {retry:g} MHz")
        report = _build_once(qm, b, out, lanes=lanes, say=say, clock_mhz=retry, baud=baud,
                             max_steps=max_steps, core=core, suggest=suggest, not_above=True,
                             runtime_weights=runtime_weights, seeds=seeds,
                             weight_memory=weight_memory, tail_width=tail_width,
                             streams=streams)
    report["build_seconds"] = round(time.monotonic() - t0, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    say(format_report(report))
    if not report["timing_met"]:
        raise TimingNotMet(
            f"{b.name}: timing not met: Fmax after routing is {report['fmax_mhz']:.1f} MHz, the "
            f"clock is {report['clock_mhz']:.2f} MHz; rebuild at {math.floor(report['fmax_mhz']):d}"
            f" MHz or with fewer lanes (report in {out / 'report.json'})")
    return report


def _build_once(qm, b: Board, out: Path, *, lanes, say, clock_mhz, baud, max_steps, core,
                suggest, not_above: bool = False, runtime_weights: bool = False,
                seeds: int = 1, weight_memory: str = "bram",
                tail_width: int | None = None, streams: int = 1) -> dict:
    from .boards.top import BoardTop
    from .protocol import model_hash

    top = BoardTop(qm, lanes, b, clock_mhz=clock_mhz, baud=baud, core=core, max_steps=max_steps,
                   clock_not_above=not_above, runtime_weights=runtime_weights,
                   weight_memory=weight_memory, tail_width=tail_width, streams=streams)
    link = top.link
    fam = b.family
    platform = b.platform_class()()
    # synthesis options: see the family's synth_opts (iCE40: -dsp, -device u on UltraPlus)
    overrides = fam.build_overrides(b, runtime_weights=runtime_weights)
    say(f"{b.name}: elaborating {link.core_kind} (lanes={lanes}) at {top.clock_mhz:.2f} MHz, "
        f"UART {baud} baud")
    for stale in ("nextpnr-report.json", fam.bitstream_name(), WEIGHT_IMAGE_FILE):
        (out / stale).unlink(missing_ok=True)
    plan = platform.prepare(top, name="top", **overrides)
    _extract(plan, out)
    commands = json.loads(plan.files["build_top.json"])["commands"]
    env = dict(os.environ)
    notes = []
    pnr_seeds: dict[int, float] = {}
    for argv in commands:
        tool = argv[0]
        cmd = tool_command(tool)
        stage = _stage(b, tool)
        if not _tool_available(cmd):
            if tool == "dfu-suffix":  # only marks the .bit for dfu-util; flash() adds it later
                notes.append("dfu-suffix not found: the DFU suffix is added at flash time")
                continue
            raise GruHwError(f"{stage}: tool {cmd!r} not found; pip install "
                             f"{YOWASP_TOOLS.get(tool, tool)} or set "
                             f"{re.sub(r'[^A-Za-z0-9]', '_', tool).upper()}")
        say(f"{b.name}: {stage} ({Path(cmd).name})")
        t = time.monotonic()
        log = out / f"{tool}.log"
        with open(log, "w") as lf:
            proc = subprocess.Popen([cmd, *argv[1:]], cwd=out, env=env, stdout=lf,
                                    stderr=subprocess.STDOUT)
            _watch(proc, out / "top.tim" if tool == fam.pnr_tool else None, say, b.name)
        if proc.returncode != 0:
            _tool_failed(qm, b, out, tool, log, lanes, suggest=suggest,
                         real_core=link.core_kind != "custom")
        say(f"{b.name}: {stage} done in {time.monotonic() - t:.1f} s")
        if tool == fam.pnr_tool:
            pnr_seeds = _seed_sweep(cmd, argv, out, env, seeds, top.clock_mhz, say, b.name)

    rep = json.loads((out / "nextpnr-report.json").read_text())
    clock = top.clock_mhz
    fmax = _pick_fmax(rep.get("fmax", {}), clock)
    util = {k: {"used": int(v["used"]), "available": int(v["available"])}
            for k, v in rep.get("utilization", {}).items()}
    for name, bels in fam.resources.items():
        used = sum(util[x]["used"] for x in bels if x in util)
        avail = sum(util[x]["available"] for x in bels if x in util)
        if avail:
            util[name] = {"used": used, "available": avail}
    ffs = _yosys_ffs(out / "top.rpt", fam.ff_cells)
    if "ff" not in util and ffs is not None:
        util["ff"] = {"used": ffs, "available": util.get("lut", {}).get("available", 0)}
    cps = _cycles_per_step(link.core, qm, lanes)
    d = link.descriptor
    bitfile = out / fam.bitstream_name()
    config = getattr(link.core, "config", None)
    image = None
    if link.loader is not None:
        data = link.flash_image()
        (out / WEIGHT_IMAGE_FILE).write_bytes(data)
        image = {"file": WEIGHT_IMAGE_FILE, "offset": link.image_offset, "bytes": len(data),
                 "words": link.loader.words, "word_bytes": link.loader.word_bytes,
                 "crc16": int.from_bytes(data[-2:], "big")}
    return {
        "board": b.name,
        "device": b.device,
        "family": fam.name,
        "core": link.core_kind,
        "profile": config.profile.name if config is not None else None,
        "lanes": lanes,
        "fmax_mhz": round(fmax, 2),
        "clock_mhz": round(clock, 4),
        "timing_met": fmax >= clock,
        "utilization": util,
        "cycles_per_step": cps,
        "streams": link.streams,
        **({"cycles_per_stream_step": float(config.schedule.cycles_per_stream_step)}
           if config is not None and link.streams > 1 else {}),
        "latency_us_per_step": round(cps / fmax, 4) if fmax > 0 else None,
        "latency_us_per_step_at_clock": round(cps / clock, 4),
        "uart": {"baud": baud, "divisor": link.divisor, "where": b.uart_note,
                 "timeout_cycles": link.timeout_cycles},
        "pll": {k: v for k, v in vars(top.pll.config).items()},
        "max_steps": link.max_steps,
        "model_hash": model_hash(qm, weights=not d.runtime_weights).hex(),
        "runtime_weights": d.runtime_weights,
        "weight_memory": link.weight_memory,
        **({"weight_image": image} if image is not None else {}),
        "link": d.to_json(),
        "bitstream": bitfile.name,
        "notes": notes,
        **({"pnr_seeds": {str(k): v for k, v in pnr_seeds.items()}} if len(pnr_seeds) > 1 else {}),
        "quant": qm.spec.to_json(),
    }


#: nextpnr's output files (renamed per seed during a sweep).
_PNR_OUTPUTS = ("top.tim", "nextpnr-report.json", "top.asc", "top.config")


def _seed_sweep(cmd: str, argv: list, out: Path, env: dict, seeds: int, clock: float, say,
                name: str) -> dict[int, float]:
    """After nextpnr's first run (its default seed, 1): while the clock is missed, run it again
    with ``--seed 2, 3, ...`` (``seeds`` runs in all); leave the best run's files in place.

    Return seed -> routed Fmax for the runs made.
    """
    def fmax_of(rep: Path) -> float:
        try:
            return _pick_fmax(json.loads(rep.read_text()).get("fmax", {}), clock)
        except (OSError, ValueError):
            return 0.0

    tried = {1: round(fmax_of(out / "nextpnr-report.json"), 2)}
    if seeds <= 1 or tried[1] >= clock:
        return tried
    best = 1
    keep = out / "seed-best"
    keep.mkdir(exist_ok=True)

    def stash():
        for f in _PNR_OUTPUTS:
            if (out / f).exists():
                shutil.copy2(out / f, keep / f)

    stash()
    for seed in range(2, seeds + 1):
        say(f"{name}: place and route: {tried[best]:.2f} MHz < {clock:.2f} MHz; "
            f"trying nextpnr seed {seed} (of up to {seeds})")
        t = time.monotonic()
        with open(out / f"{argv[0]}.seed{seed}.log", "w") as lf:
            proc = subprocess.Popen([cmd, *argv[1:], "--seed", str(seed)], cwd=out, env=env,
                                    stdout=lf, stderr=subprocess.STDOUT)
            _watch(proc, None, say, name)
        f = round(fmax_of(out / "nextpnr-report.json"), 2) if proc.returncode == 0 else 0.0
        tried[seed] = f
        say(f"{name}: seed {seed}: {f:.2f} MHz ({time.monotonic() - t:.1f} s)")
        if f > tried[best]:
            best = seed
            stash()
        if f >= clock:
            break
    for f in _PNR_OUTPUTS:  # the best run's files
        if (keep / f).exists():
            shutil.copy2(keep / f, out / f)
    shutil.rmtree(keep, ignore_errors=True)
    say(f"{name}: place and route: keeping seed {best} ({tried[best]:.2f} MHz)")
    return tried


def _watch(proc: subprocess.Popen, tim: Path | None, say, name: str) -> None:
    """Wait for ``proc``; for nextpnr, report placement and routing as they start."""
    marks = [("Info: Placed ", "placing"), ("Info: Running main analytical placer", "placing"),
             ("Info: Routing..", "routing"), ("Info: Router2", "routing")]
    seen: set[str] = set()
    while proc.poll() is None:
        time.sleep(0.5)
        if tim is None or not tim.exists():
            continue
        try:
            text = tim.read_text(errors="replace")
        except OSError:
            continue
        for key, label in marks:
            if key in text and label not in seen:
                seen.add(label)
                say(f"{name}: {label}")


def _pick_fmax(fmax: dict, clock: float) -> float:
    if not fmax:
        return 0.0
    best = min(fmax.values(), key=lambda v: abs(float(v.get("constraint", 0)) - clock))
    return float(best["achieved"])


def _yosys_ffs(rpt: Path, cells: str) -> int | None:
    """Count flip-flops in Yosys' last statistics (cell types matching ``cells``, e.g.
    SB_DFF* / TRELLIS_FF)."""
    try:
        text = rpt.read_text(errors="replace")
    except OSError:
        return None
    last = max(text.rfind("Number of cells"), text.rfind("Count including submodules"))
    if last < 0:
        return None
    total = 0
    for m in re.finditer(rf"^\s+(\d+)\s+({cells})\s*$", text[last:], re.M):
        total += int(m.group(1))
    return total


_UTIL_LINE = re.compile(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%")


def _tool_failed(qm, b: Board, out: Path, tool: str, log: Path, lanes: int, *,
                 suggest: bool, real_core: bool = True) -> None:
    tim = out / "top.tim"
    text = tim.read_text(errors="replace") if tool == b.family.pnr_tool and tim.exists() \
        else log.read_text(errors="replace")
    over = [(m.group(1), int(m.group(2)), int(m.group(3)))
            for m in _UTIL_LINE.finditer(text) if int(m.group(2)) > int(m.group(3))]
    errors = [ln.strip() for ln in text.splitlines() if "ERROR" in ln]
    if over:
        over.sort(key=lambda r: -r[1] / max(r[2], 1))
        best = None
        if suggest:
            fits = [suggest_lanes(qm, b, lanes, r, u, a, real_core=real_core) for r, u, a in over]
            best = None if None in fits else min(fits)
        hint = (f"; the largest lane count estimated to fit is {best}" if best
                else "; fewer lanes alone will not make it fit (weights or fixed logic): use "
                     "narrower weights or activations, or a larger board")
        what = ", ".join(f"{r} {u}/{a} ({u - a} over, {100 * u / a:.0f}%)" for r, u, a in over)
        res, used, avail = over[0]
        raise DoesNotFit(
            f"{b.name} ({b.device}): the design does not fit: {what} at {lanes} lanes{hint}",
            resource=res, used=used, available=avail, suggested_lanes=best)
    detail = errors[-1] if errors else "exit status non-zero"
    raise BuildFailed(f"{b.name}: {_stage(b, tool)} failed: {detail} (log: {log})")


def suggest_lanes(qm, b: Board, lanes: int, resource: str, used: int, available: int, *,
                  real_core: bool = True) -> int | None:
    """Estimate the largest lane count below ``lanes`` whose use of ``resource`` fits.

    Hard multipliers scale with the hard multipliers of the core the board builds at each lane
    count (its family's profile: :func:`core_config_for`); logic and RAM are taken as a fixed
    part (what one lane needs) plus a part proportional to the lanes.
    """
    if lanes <= 1:
        return None
    mults = lambda p: p  # noqa: E731  (stand-in core: one multiplier per lane)
    if real_core:
        mults = lambda p: core_config_for(qm, b, p).schedule.dsp_multipliers  # noqa: E731
    if b.family.is_dsp(resource):
        per = used / max(mults(lanes), 1)
        fits = [p for p in range(1, lanes) if math.ceil(mults(p) * per) <= available]
    else:
        # used(p) ~ fixed + slope * p; with no second point assume half of it scales with lanes.
        slope = 0.5 * used / lanes
        fixed = used - slope * lanes
        fits = [p for p in range(1, lanes) if fixed + slope * p <= 0.97 * available]
    return max(fits) if fits else None


def format_report(r: dict) -> str:
    """Return the human table of a build report."""
    u = r["utilization"]
    rows = [("board", f"{r['board']} ({r['device']})"),
            ("core", f"{r['core']}, {r['lanes']} lanes, weights in "
                     f"{r.get('weight_memory', 'bram').upper()}"),
            ("Fmax (routed)", f"{r['fmax_mhz']:.2f} MHz"),
            ("clock", f"{r['clock_mhz']:.2f} MHz ({'met' if r['timing_met'] else 'NOT MET'})"),
            ("cycles/step", str(r["cycles_per_step"])),
            ("us/step at Fmax", f"{r['latency_us_per_step']}")]
    if r.get("streams", 1) > 1:
        per = r.get("cycles_per_stream_step")
        rows.append(("streams", f"{r['streams']} (a hidden state each" +
                     (f"; {per:g} cycles per stream step round-robin)" if per else ")")))
    for key, label in (("lut", "LUT"), ("ff", "FF"), ("dsp", "DSP"), ("bram", "BRAM"),
                       ("spram", "SPRAM")):
        if key in u and u[key]["available"]:
            v = u[key]
            rows.append((label, f"{v['used']}/{v['available']} "
                                f"({100 * v['used'] / v['available']:.0f}%)"))
    rows.append(("UART", f"{r['uart']['baud']} baud 8N1, {r['uart']['where']}"))
    if r.get("weight_image"):
        wi = r["weight_image"]
        rows.append(("weight image", f"{wi['file']}, {wi['bytes']} bytes, flash offset "
                                     f"0x{wi['offset']:x} (gru-hw flash writes it)"))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


# ---- flash ---------------------------------------------------------------------------------------
def _read_report(build_dir: str | os.PathLike) -> tuple[Path, dict]:
    d = Path(build_dir)
    rp = d / "report.json"
    if not rp.exists():
        raise GruHwError(f"{d}: no report.json (is this a `gru-hw build` output directory?)")
    try:
        report = json.loads(rp.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GruHwError(f"{rp}: cannot read ({exc})") from None
    if report.get("board") not in BOARDS:
        raise GruHwError(f"{rp}: unknown board {report.get('board')!r}")
    return d, report


def flash(build_dir: str | os.PathLike, dry_run: bool = False, *,
          persist: bool = True) -> list[list[str]]:
    """Program the board the build in ``build_dir`` was made for; return the commands.

    An SPRAM build has two: the bitstream, then its weight image at its flash offset (iCEBreaker:
    ``iceprog -o 1024k weights.bin``), which the board loads at power-up; the image is written
    even when the bitstream goes to SRAM only (``persist`` False).

    The command comes from the board's entry and family (:meth:`Family.flash_command`):
    iCEBreaker ``iceprog top.bin`` (SPI flash; ``-S``: SRAM only, when not ``persist``); ULX3S
    ``openFPGALoader -b ulx3s`` (``-f``: to its flash, when ``persist``); OrangeCrab
    ``openFPGALoader -b orangeCrab`` through its DFU bootloader (hold the button while plugging
    in; the DFU suffix is added first when dfu-suffix is installed). ``$ICEPROG`` /
    ``$OPENFPGALOADER`` replace the tool.
    """
    d, report = _read_report(build_dir)
    try:
        b = get_board(report["board"])
    except GruHwError as exc:
        raise GruHwError(f"{d / 'report.json'}: {exc}") from None
    fam = b.family
    bit = d / fam.bitstream_name()
    if not bit.exists():
        raise GruHwError(f"{d}: no bitstream {bit.name} (did the build finish?)")
    cmds = [fam.flash_command(b, bit, persist=persist)]
    wi = report.get("weight_image")
    if wi:
        image = d / str(wi.get("file", WEIGHT_IMAGE_FILE))
        if not image.exists():
            raise GruHwError(f"{d}: no weight image {image.name} (the build keeps its weights in "
                             "SPRAM and writes them there; rebuild)")
        cmds.append(fam.flash_data_command(b, image, int(wi["offset"])))
    if dry_run:
        return cmds
    if shutil.which(cmds[0][0]) is None:
        tool = fam.flash_tool(b)
        raise GruHwError(f"flash: {cmds[0][0]} not found; install it with `{tool.install}` "
                         f"(or set {tool.env_var})")
    for prep in fam.flash_prepare(b, bit):  # optional steps: skipped without their tool
        if shutil.which(prep[0]):
            subprocess.run(prep, capture_output=True)
    for cmd in cmds:
        try:
            subprocess.run(cmd, check=True)
        except subprocess.CalledProcessError as exc:
            raise GruHwError(f"flash: {' '.join(cmd)} failed with status {exc.returncode} "
                             "(is the board plugged in, and do you have permission for its "
                             "USB device?)") from None
    return cmds


# ---- run on a flashed board ----------------------------------------------------------------------
def run_on_board(port_name: str, inputs_path, output_path, *, baud: int, qm=None,
                 check: bool = False, keep_state: bool = False, load_weights: bool = False,
                 log: Callable[[str], None] | None = None, streams: int | None = None) -> dict:
    """Run INPUTS on a flashed board over its UART; write the outputs; return a summary.

    ``qm`` (the quantized model the board must hold) makes the host refuse a board holding
    another model; ``check`` compares every output with the bit-exact golden model (``match``,
    ``mismatch`` in the summary); ``load_weights`` first writes ``qm``'s weights into a
    run-time-weights board. ``log`` receives progress lines. ``streams`` S (None: 1): the
    sequences are dealt to streams 0..S-1 in order (sequence n on stream n % S; with
    ``keep_state`` each continues its own stream's state); the board must have S streams or more.
    """
    import numpy as np

    from .io import load_inputs, save_outputs
    from .link import BoardClient, open_port
    from .streams import assign_streams, golden_streams

    if (check or load_weights) and qm is None:
        raise GruHwError("checking outputs or loading weights needs the model")
    say = log or (lambda _msg: None)
    port = open_port(port_name, baud)
    try:
        client = BoardClient(port, expect=qm, loading=load_weights)
        desc = client.identify()
        if load_weights:
            crc = client.load_weights(qm)
            say(f"{port_name}: loaded {desc.weight_words} weight words, checksum 0x{crc:04x}")
        x, lengths = load_inputs(inputs_path, desc.input_size)
        n_streams = 1 if streams is None else streams
        if (not isinstance(n_streams, int) or isinstance(n_streams, bool)
                or not 1 <= n_streams <= desc.streams):
            raise GruHwError(f"streams must be within 1..{desc.streams} (the board was built with "
                             f"{desc.streams} stream(s)), got {n_streams!r}", subject="streams")
        stream_of = assign_streams(len(x), n_streams)
        client.reset_state()
        res = client.run(x, lengths, keep_state=keep_state, stream=stream_of)
    finally:
        port.close()
    save_outputs(output_path, y=res["y"], cycles=res["cycles"])
    out = {"sequences": int(res["y"].shape[0]), "cycles": res["cycles"].tolist(),
           "cycles_mean": float(np.mean(res["cycles"])), "model_hash": desc.model_hash.hex(),
           "match": True, "checked": bool(check), "streams": n_streams}
    if check:
        gold, _ = golden_streams(qm, res["xq"], res["lengths"], res["stream"],
                                 keep_state=keep_state)
        bad = np.argwhere(gold != res["yq"])
        if len(bad):
            n, o = (int(v) for v in bad[0])
            out["match"] = False
            out["mismatch"] = (f"board output differs from golden at sequence {n}, output {o}: "
                               f"expected {int(gold[n, o])}, got {int(res['yq'][n, o])} "
                               f"({len(bad)} differing value(s))")
    return out


def expected_model(model_path, report: dict | None, report_path=None):
    """Return (the quantized model a board must hold, weights saturated by its formats).

    The build's QuantSpec (report.json ``quant``) when there is a report, else the default
    formats chosen from the model's weights.
    """
    from .importers import load_model
    from .quant import QuantSpec, choose_spec, quantize_model

    model = load_model(model_path)
    if report is not None and "quant" in report:
        spec = QuantSpec.from_json(report["quant"], where=f"{report_path} quant")
    else:
        spec = choose_spec(model)
    qm = quantize_model(model, spec)
    return qm, int(sum(qm.saturations.values()))
