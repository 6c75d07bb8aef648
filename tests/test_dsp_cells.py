"""MAC lanes on MULT18X18D cells with their own registers (``CoreProfile.mac_cells="ecp5"``).

The Verilog has one registered MULT18X18D per lane and no fabric weight/vector/product
registers; the core synthesized with synth_ecp5 and simulated as a netlist (Yosys's ECP5 models,
gru_hw.netlist's MULT18X18D model) is exact against golden, and a cell with its output register
bypassed is caught. ``mac_cells=""`` (and the cases where "ecp5" falls back to ``*``) write
the same Verilog as before.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from conftest import random_model
from gru_hw.config import PROFILES, CoreConfig, CoreProfile, get_profile
from gru_hw.errors import GruHwError
from gru_hw.gateware import GRUCore
from gru_hw.gateware.dsp import ECP5_MAC_PARAMS, ECP5MacMultiplier, ecp5_mac_cells
from gru_hw.golden import quantize_inputs
from gru_hw.quant import choose_spec, quantize_model
from gru_hw.sim.testing import build_root, require_tool
from gru_hw.simulate import netlist_run

ECP5 = get_profile("dsp").with_(mac_cells="ecp5")
LANES = 6


@pytest.fixture(scope="module")
def sim_root(request, tmp_path_factory):
    return build_root(request.config, tmp_path_factory)


def _qm(weight_bits: int = 16, act_bits: int = 16):
    model = random_model(np.random.default_rng(5), 4, [6], head=3)
    return quantize_model(model, choose_spec(model, weight_bits, act_bits))


def _verilog(config) -> str:
    return verilog.convert(GRUCore(config), name="gru_core", emit_src=False)


def _instances(text: str) -> list[str]:
    """The MULT18X18D instances of a Verilog text (parameters and connections)."""
    return re.findall(r"MULT18X18D #\((.*?)\);", text, flags=re.S)


def test_verilog_has_one_registered_cell_per_lane():
    qm = _qm()
    cfg = CoreConfig(qm, LANES, ECP5)
    assert ecp5_mac_cells(cfg)
    text = _verilog(cfg)
    cells = _instances(text)
    assert len(cells) == LANES  # the tail's products stay `*` (synthesis maps them)
    for cell in cells:
        params = dict(re.findall(r'\.(\w+)\("(\w+)"\)', cell))
        assert params == ECP5_MAC_PARAMS
        assert params["REG_INPUTA_CLK"] == params["REG_INPUTB_CLK"] == "CLK0"
        assert params["REG_OUTPUT_CLK"] == "CLK0" and params["REG_PIPELINE_CLK"] == "NONE"
        for conn in (".CLK0(clk)", ".CE0(1'h1)", ".RST0(1'h0)", ".SIGNEDA(1'h1)",
                     ".SIGNEDB(1'h1)", ".SOURCEA(1'h0)", ".SOURCEB(1'h0)"):
            assert conn in cell
        # 16-bit operands sign-extended to 18 bits
        assert ".A16(a[15])" in cell and ".A17(a[15])" in cell and ".B17(b[15])" in cell
    # no fabric operand or product registers left in the lanes
    lanes = _module(text, "gru_core.lanes")
    assert not re.search(r"\breg\b[^;]*\b(vec|wq\d+|prod\d+)\b", lanes)
    plain = _verilog(CoreConfig(qm, LANES, "dsp"))
    assert not _instances(plain)
    lanes = _module(plain, "gru_core.lanes")
    for name in ("vec", "wq0", f"wq{LANES - 1}", "prod0"):
        assert re.search(rf"\breg\b[^;]*\b{name} =", lanes), name


def _module(text: str, name: str) -> str:
    """The text of Verilog module ``name``."""
    start = text.index(f"module \\{name} (")
    return text[start:text.index("endmodule", start)]


def test_default_and_fallbacks_write_the_same_verilog():
    """mac_cells "" is the `*` form; "ecp5" falls back to it, writing the very same Verilog,
    for the Amaranth simulator's cores (spram_cells=False) and for operands over 18 bits."""
    qm = _qm()
    plain = _verilog(CoreConfig(qm, LANES, "dsp"))
    sim_cfg = CoreConfig(qm, LANES, ECP5, spram_cells=False)
    assert not ecp5_mac_cells(sim_cfg)
    assert _verilog(sim_cfg) == plain
    wide = _qm(20, 16)
    assert CoreConfig(wide, LANES, ECP5).memory_map.weight_width > 18
    wide_cfg = CoreConfig(wide, LANES, ECP5)
    assert not ecp5_mac_cells(wide_cfg)
    assert _verilog(wide_cfg) == _verilog(CoreConfig(wide, LANES, "dsp"))
    # the profile field is recorded; the other profiles are unchanged
    assert ECP5.to_json()["mac_cells"] == "ecp5"
    assert all(p.mac_cells == "" for p in PROFILES.values())


@pytest.mark.parametrize("bad", ["ECP5", "ice40", "dsp", None, 1])
def test_bad_mac_cells_raise(bad):
    with pytest.raises(GruHwError, match="MAC cells must be one of"):
        CoreProfile("x", mac_cells=bad)
    with pytest.raises(GruHwError, match="MAC cells must be one of"):
        get_profile("dsp").with_(mac_cells=bad)


def test_multiplier_model_latency():
    """ECP5MacMultiplier(cells=False), the Amaranth twin of the cell: p = a * b of two cycles
    earlier (the cycles of MACLanes' w_q/vec and prod registers)."""
    dut = ECP5MacMultiplier(16, 16, cells=False)
    rng = np.random.default_rng(3)
    ops = [(int(a), int(b)) for a, b in rng.integers(-2**15, 2**15, (12, 2))]
    ops[0] = (-2**15, -2**15)
    seen = []

    async def bench(ctx):
        for a, b in ops + [(0, 0), (0, 0)]:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            await ctx.tick()
            seen.append(ctx.get(dut.p))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen[1:len(ops) + 1] == [a * b for a, b in ops]
    with pytest.raises(ValueError, match="at most 18 bits"):
        ECP5MacMultiplier(19, 16)


def test_amaranth_simulation_takes_the_ecp5_profile():
    """The Amaranth simulator builds the "ecp5" profile's core with `*` (no instance) and it is
    exact."""
    from gru_hw.amaranth_sim import simulate
    from gru_hw.golden import int_forward_q

    qm = _qm()
    rng = np.random.default_rng(7)
    xq, _ = quantize_inputs(qm.spec, rng.normal(0, 1.5, (2, 3, 4)))
    lengths = np.array([3, 2])
    y, _, _ = simulate(qm, xq, lengths, lanes=LANES, profile=ECP5)
    gold = int_forward_q(qm, xq, lengths)
    assert np.array_equal(y, gold.y)


def _netlist_case():
    qm = _qm()
    rng = np.random.default_rng(9)
    xq, _ = quantize_inputs(qm.spec, rng.normal(0, 1.5, (3, 5, 4)))
    return qm, xq, np.array([5, 2, 4])


def test_ecp5_cells_netlist_is_exact(sim_root, tmp_path):
    """synth_ecp5 keeps the instances (one registered MULT18X18D per lane, the tail's products
    mapped combinationally beside them) and the netlist is exact against golden."""
    require_tool("icarus")
    qm, xq, lengths = _netlist_case()
    cfg = CoreConfig(qm, LANES, ECP5)
    res = netlist_run(qm, xq, lengths, config=cfg, family="ecp5", synth_opts=None,
                      build_root=sim_root, test_dir=tmp_path,
                      options={"idle": [0, 2, 0], "backpressure": {"random": 0.3, "seed": 4}})
    assert res["match"], res["mismatch"]
    text = open(res["netlist"]["netlist"]).read()
    assert text.count('.REG_OUTPUT_CLK("CLK0")') == LANES
    assert text.count('.REG_INPUTA_CLK("CLK0")') == text.count('.REG_INPUTB_CLK("CLK0")') == LANES
    assert res["netlist"]["cells"]["MULT18X18D"] >= LANES + 4


def test_ecp5_cells_netlist_register_fault_is_caught(sim_root, tmp_path):
    """A lane's cell with its output register bypassed (one cycle early) fails the check: the
    netlist simulation runs the cells' registers."""
    require_tool("icarus")
    qm, xq, lengths = _netlist_case()
    cfg = CoreConfig(qm, LANES, ECP5)
    res = netlist_run(qm, xq, lengths, config=cfg, family="ecp5", synth_opts=None,
                      build_root=sim_root, test_dir=tmp_path, mutate="dsp-register")
    assert not res["match"]
    assert "REG_OUTPUT_CLK CLK0 -> NONE" in res["netlist"]["mutation"]
