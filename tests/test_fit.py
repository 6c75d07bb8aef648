"""The pre-synthesis fit estimate and the configuration `build` chooses without --lanes/widths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gru_hw import cli
from gru_hw.errors import GruHwError
from gru_hw.fit import block_rams, choose, estimate
from gru_hw.importers import load_model
from gru_hw.quant import choose_spec, quantize_model

from conftest import random_model

EXAMPLE = Path(__file__).resolve().parent.parent / "gru_hw" / "data" / "japanese_vowels_gru.pt"


def test_block_ram_rules():
    assert block_rams(592, 8, 1, "ice40", rom=True) == 2     # 2 x 512x8
    assert block_rams(96, 20, 1, "ice40", rom=False) == 2    # 20 bits: two 256x16
    assert block_rams(64, 8, 2, "ice40", rom=False) == 2     # a second read port duplicates
    assert block_rams(32, 12, 1, "ice40", rom=True) == 0     # a small table becomes logic
    assert block_rams(2040, 8, 1, "ice40", rom=False) == 4
    assert block_rams(32, 16, 1, "ecp5", rom=False) == 0     # LUT RAM
    assert block_rams(592, 16, 1, "ecp5", rom=True) == 1     # one 1024x18 DP16KD


def test_estimate_matches_the_measured_example_build():
    """Block RAMs and multipliers of the iCEBreaker example (8 lanes, 8/8 bits): the figures
    nextpnr reported for that build (30/30 BRAM, 8/8 SB_MAC16) and for 4 lanes (26 BRAM)."""
    model = load_model(EXAMPLE)
    qm = quantize_model(model, choose_spec(model, 8, 8))
    est = estimate(qm, "icebreaker", 8)
    assert (est.used["bram"], est.used["dsp"], est.profile) == (30, 8, "seq")
    assert est.fits and est.cycles_per_step == 548
    assert estimate(qm, "icebreaker", 4).used["bram"] == 26
    wide = estimate(quantize_model(model, choose_spec(model, 16, 16)), "icebreaker", 8)
    assert not wide.fits and set(wide.over) >= {"bram", "lut"}


def test_choose_prefers_speed_then_width():
    model = load_model(EXAMPLE)
    found = choose(model, "icebreaker")
    assert found[0].lanes == 8 and found[0].fits and not found[0].tight
    roomy = [e for e in found if not e.tight]
    assert found[:len(roomy)] == roomy  # configurations with room first
    assert [e.cycles_per_step for e in roomy] == sorted(e.cycles_per_step for e in roomy)
    assert found[0].weight_memory == "bram"  # the example fits block RAM: auto keeps it there
    big = random_model(np.random.default_rng(0), 12, [100], head=9)  # 33,600 weights
    assert choose(big, "icebreaker")[0].weight_memory == "spram"  # too big for block RAM
    with pytest.raises(GruHwError, match=r"icebreaker: no configuration fits.*estimated"):
        choose(big, "icebreaker", weight_memory="bram")
    huge = random_model(np.random.default_rng(0), 12, [400], head=9)  # 494,400 weights
    with pytest.raises(GruHwError, match=r"icebreaker: no configuration fits.*SPRAM"):
        choose(huge, "icebreaker", widths=((8, 8), (4, 8)))


def test_build_refuses_before_synthesis(tmp_path, capsys):
    out = tmp_path / "b"
    status = cli.main(["build", str(EXAMPLE), "--board", "icebreaker", "-o", str(out),
                       "--lanes", "8", "--weight-bits", "16", "--act-bits", "16"])
    assert status == 1
    err = capsys.readouterr().err
    assert "does not fit" in err and "estimated before synthesis" in err and "would fit" in err
    assert not out.exists()


def test_info_board_says_whether_it_fits(capsys):
    assert cli.main(["info", str(EXAMPLE), "--board", "icebreaker", "--lanes", "8",
                     "--weight-bits", "8", "--act-bits", "8"]) == 0
    assert "icebreaker: fits" in capsys.readouterr().out


def test_build_budget_flags(tmp_path, capsys):
    """An accuracy or error budget chooses the widths: it needs --calibrate and no explicit
    widths; a budget no width meets is refused before any synthesis."""
    train = Path(EXAMPLE).parent / "japanese_vowels_train.npz"
    out = tmp_path / "b"
    assert cli.main(["build", str(EXAMPLE), "--board", "icebreaker", "-o", str(out),
                     "--lanes", "8", "--target-error", "0.1"]) == 2
    assert "--target-accuracy-drop / --target-error choose the widths" in capsys.readouterr().err
    assert cli.main(["build", str(EXAMPLE), "--board", "icebreaker", "-o", str(out),
                     "--calibrate", str(train), "--target-error", "0.0001"]) == 1
    assert "no widths up to 24 bits meet the target" in capsys.readouterr().err
    assert not out.exists()


def test_info_says_how_a_big_model_fits(tmp_path, capsys):
    """info --board icebreaker: a model too big for block RAM goes to SPRAM (said before
    synthesis); one too big even for SPRAM is told the largest hidden size and the narrowest
    weight width that would fit."""
    big = tmp_path / "big.npz"
    random_model(np.random.default_rng(0), 12, [100], head=9).save_npz(big)
    assert cli.main(["info", str(big), "--board", "icebreaker", "--lanes", "8",
                     "--weight-bits", "8", "--act-bits", "8"]) == 0
    out = capsys.readouterr().out
    assert "icebreaker: fits" in out and "weights in SPRAM" in out
    huge = tmp_path / "huge.npz"
    random_model(np.random.default_rng(0), 12, [400], head=9).save_npz(huge)
    assert cli.main(["info", str(huge), "--board", "icebreaker", "--lanes", "8",
                     "--weight-bits", "8", "--act-bits", "8"]) == 0
    out = capsys.readouterr().out
    assert "does not fit" in out and "SPRAM" in out
    assert "would fit: hidden size 200 at 8-bit weights" in out
    assert "this model at 2-bit weights (--weight-bits 2)" in out
