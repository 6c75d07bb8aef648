"""PLL divider search and instances: SB_PLL40_PAD / SB_PLL40_CORE (iCE40), EHXPLLL (ECP5).

The PLL drives the ``sync`` domain; reset is held until the PLL locks and then for a power-on
delay (iCE40 block RAMs read as zero for ~3 us after configuration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, ResetSignal
from amaranth import Signal

from ..errors import GruHwError


@dataclass(frozen=True)
class ICE40PLLConfig:
    """SB_PLL40 settings (SIMPLE feedback): fout = fin * (divf + 1) / ((divr + 1) * 2**divq)."""

    fin_mhz: float
    divr: int
    divf: int
    divq: int
    filter_range: int

    @property
    def fout_mhz(self) -> float:
        """The output frequency."""
        return self.fin_mhz * (self.divf + 1) / ((self.divr + 1) * 2 ** self.divq)

    @property
    def fvco_mhz(self) -> float:
        """The VCO frequency."""
        return self.fin_mhz * (self.divf + 1) / (self.divr + 1)


def ice40_pll(fin_mhz: float, fout_mhz: float, *, not_above: bool = False) -> ICE40PLLConfig:
    """Return the divider set whose output is closest to ``fout_mhz`` (the icepll rules).

    With ``not_above``, only outputs up to ``fout_mhz`` are considered.
    """
    if not 10 <= fin_mhz <= 133:
        raise GruHwError(f"iCE40 PLL input must be 10..133 MHz, got {fin_mhz:g}")
    if not 16 <= fout_mhz <= 275:
        raise GruHwError(f"the iCE40 PLL makes 16..275 MHz, asked for {fout_mhz:g}",
                         subject="clock_mhz")
    best = None
    for divr in range(16):
        fpfd = fin_mhz / (divr + 1)
        if not 10 <= fpfd <= 133:
            continue
        for divf in range(128):
            fvco = fpfd * (divf + 1)
            if not 533 <= fvco <= 1066:
                continue
            for divq in range(1, 7):
                fout = fvco / 2 ** divq
                if not_above and fout > fout_mhz + 1e-9:
                    continue
                err = abs(fout - fout_mhz)
                if best is None or err < best[0] - 1e-9:
                    fr = 1 if fpfd < 17 else 2 if fpfd < 26 else 3 if fpfd < 44 else \
                        4 if fpfd < 66 else 5 if fpfd < 101 else 6
                    best = (err, ICE40PLLConfig(fin_mhz, divr, divf, divq, fr))
    if best is None:
        raise GruHwError(f"no iCE40 PLL setting makes {fout_mhz:g} MHz from {fin_mhz:g} MHz")
    return best[1]


@dataclass(frozen=True)
class ECP5PLLConfig:
    """EHXPLLL settings (CLKOP feedback): fout = fin / clki_div * clkfb_div."""

    fin_mhz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def fout_mhz(self) -> float:
        """The output frequency."""
        return self.fin_mhz / self.clki_div * self.clkfb_div

    @property
    def fvco_mhz(self) -> float:
        """The VCO frequency."""
        return self.fout_mhz * self.clkop_div


def ecp5_pll(fin_mhz: float, fout_mhz: float, *, not_above: bool = False) -> ECP5PLLConfig:
    """Return the EHXPLLL divider set closest to ``fout_mhz`` (the ecppll rules).

    With ``not_above``, only outputs up to ``fout_mhz`` are considered.
    """
    if not 8 <= fout_mhz <= 400:
        raise GruHwError(f"the ECP5 PLL makes 8..400 MHz, asked for {fout_mhz:g}",
                         subject="clock_mhz")
    best = None
    for clki in range(1, 129):
        fpfd = fin_mhz / clki
        if fpfd < 3.125:
            break
        for fb in range(1, 81):
            fout = fpfd * fb
            if not_above and fout > fout_mhz + 1e-9:
                break
            lo, hi = max(1, math.ceil(400 / fout)), min(128, math.floor(800 / fout))
            if lo > hi:
                continue
            op = min(max(round(600 / fout), lo), hi)  # the VCO nearest the middle of its range
            key = (round(abs(fout - fout_mhz), 6), abs(fout * op - 600), clki)
            if best is None or key < best[0]:
                best = (key, ECP5PLLConfig(fin_mhz, clki, fb, op))
    if best is None:
        raise GruHwError(f"no ECP5 PLL setting makes {fout_mhz:g} MHz from {fin_mhz:g} MHz")
    return best[1]


def ice40_pll_instance(cfg: ICE40PLLConfig, pad, clk, locked) -> Instance:
    """Return the SB_PLL40_PAD for ``cfg``: ``pad`` is the PLL's package pin (a ``dir="-"``
    port), ``clk`` the global output, ``locked`` the lock flag."""
    return Instance(
        "SB_PLL40_PAD",
        p_FEEDBACK_PATH="SIMPLE",
        p_DIVR=Const(cfg.divr, 4), p_DIVF=Const(cfg.divf, 7), p_DIVQ=Const(cfg.divq, 3),
        p_FILTER_RANGE=Const(cfg.filter_range, 3),
        i_PACKAGEPIN=pad.io,
        i_RESETB=Const(1), i_BYPASS=Const(0),
        o_PLLOUTGLOBAL=clk, o_LOCK=locked,
    )


def ecp5_pll_instance(cfg: ECP5PLLConfig, clk_in, clk, locked) -> Instance:
    """Return the EHXPLLL for ``cfg``: ``clk_in`` is the buffered board clock, ``clk`` the
    output (CLKOP, also the feedback), ``locked`` the lock flag."""
    return Instance(
        "EHXPLLL",
        a_FREQUENCY_PIN_CLKI=f"{cfg.fin_mhz:g}",
        a_FREQUENCY_PIN_CLKOP=f"{cfg.fout_mhz:g}",
        a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
        a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
        p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
        p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
        p_CLKI_DIV=cfg.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=cfg.clkop_div,
        p_CLKOP_CPHASE=cfg.clkop_div - 1, p_CLKOP_FPHASE=0,
        p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=cfg.clkfb_div,
        i_RST=Const(0), i_STDBY=Const(0), i_CLKI=clk_in, o_CLKOP=clk, i_CLKFB=clk,
        i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
        i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
        i_ENCLKOP=Const(0), o_LOCK=locked,
    )


class PLLClockDomain(Elaboratable):
    """Create the ``sync`` domain from a board clock through the family's PLL.

    ``family`` is a :class:`gru_hw.boards.family.Family` (or its name, ``"ice40"`` / ``"ecp5"``):
    it computes the divider settings and adds the PLL primitive. Usually made by
    ``Family.pll_domain``.

    The parent defines ``sync`` (``ClockDomain("sync")``); this drives its clock and reset.
    ``clk_port`` is the board clock resource requested with ``dir="-"`` (iCE40: fed straight to
    SB_PLL40_PAD's PACKAGEPIN, so it must be the PLL's pad; ECP5: through an input buffer into
    EHXPLLL). ``sync`` is held in reset until the PLL locks and ``por_cycles`` more have passed.
    ``locked`` is high once the PLL is locked.
    """

    def __init__(self, family, clk_port, fin_mhz: float, fout_mhz: float, *,
                 por_cycles: int = 1024, not_above: bool = False) -> None:
        from .family import get_family

        self.family = get_family(family)
        self.clk_port = clk_port
        self.por_cycles = por_cycles
        self.config = self.family.pll_config(fin_mhz, fout_mhz, not_above=not_above)
        self.fout_mhz = self.config.fout_mhz
        self.locked = Signal()
        self.clk = Signal()

    def elaborate(self, platform) -> Module:
        m = Module()
        clk = self.clk
        self.family.add_pll(m, self.config, self.clk_port, clk, self.locked)
        # nextpnr derives the output clock's constraint from the PLL settings and the board
        # clock's constraint, so none is added here.

        # Power-on reset: counts in a reset-less domain on the same clock.
        m.domains.por = ClockDomain("por", reset_less=True, local=True)
        m.d.comb += [ClockSignal("por").eq(clk), ClockSignal("sync").eq(clk)]
        lock_s = Signal(2)
        timer = Signal(range(self.por_cycles + 1))
        ready = Signal()
        m.d.por += lock_s.eq(lock_s << 1 | self.locked)
        with m.If(~lock_s[1]):
            m.d.por += [timer.eq(0), ready.eq(0)]
        with m.Elif(timer == self.por_cycles):
            m.d.por += ready.eq(1)
        with m.Else():
            m.d.por += timer.eq(timer + 1)
        m.d.comb += ResetSignal("sync").eq(~ready)
        return m
