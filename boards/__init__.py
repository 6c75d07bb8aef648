"""Boards gru-hw builds for: names, platforms, device resources, clocks, and how to flash them.

The gateware for a board lives here (``gru_hw.boards.top``: the board top, ``uart``, ``pll``);
the top-level ``boards/`` folder holds per-board notes (wiring, flashing) for people.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import GruHwError


@dataclass(frozen=True)
class Board:
    """One supported board."""

    name: str
    platform: str  #: class name in amaranth_boards
    module: str  #: amaranth_boards module
    family: str  #: "ice40" or "ecp5"
    device: str
    dsp: int  #: hard multipliers (SB_MAC16 / MULT18X18D)
    bram: int  #: block RAMs (EBR 4 Kbit on iCE40, 18 Kbit on ECP5)
    bram_bits: int  #: bits per block RAM
    spram: int  #: iCE40 UP 16K x 16 single-port RAMs
    luts: int
    clock_in_mhz: float  #: the board oscillator
    default_clock_mhz: float  #: what the PLL makes unless asked otherwise
    uart_note: str  #: where the host's serial adapter connects

    def platform_class(self):
        """Return the amaranth-boards platform class."""
        import importlib

        return getattr(importlib.import_module(f"amaranth_boards.{self.module}"), self.platform)

    def resources(self) -> dict[str, int]:
        """Return the capacity of each resource the fit check looks at."""
        return {"dsp": self.dsp, "bram": self.bram, "spram": self.spram, "lut": self.luts}


_ULX3S_NOTE = "the ULX3S's own USB port (FTDI FT231X): /dev/ttyUSB0"
_CRAB_NOTE = ("a 3.3 V USB-serial adapter on the Feather pins: adapter TX -> pin 0 (board RX), "
              "adapter RX <- pin 1 (board TX), GND (the OrangeCrab's USB is not a UART)")

BOARDS: dict[str, Board] = {
    "icebreaker": Board("icebreaker", "ICEBreakerPlatform", "icebreaker", "ice40", "iCE40UP5K",
                        dsp=8, bram=30, bram_bits=4096, spram=4, luts=5280, clock_in_mhz=12.0,
                        default_clock_mhz=42.0,
                        uart_note="the iCEBreaker's USB port, second interface (FT2232H "
                                  "channel B): /dev/ttyUSB1"),
    "ulx3s-12f": Board("ulx3s-12f", "ULX3S_12F_Platform", "ulx3s", "ecp5", "LFE5U-12F", dsp=28,
                       bram=32, bram_bits=18432, spram=0, luts=12288, clock_in_mhz=25.0,
                       default_clock_mhz=100.0, uart_note=_ULX3S_NOTE),
    "ulx3s-25f": Board("ulx3s-25f", "ULX3S_25F_Platform", "ulx3s", "ecp5", "LFE5U-25F", dsp=28,
                       bram=56, bram_bits=18432, spram=0, luts=24288, clock_in_mhz=25.0,
                       default_clock_mhz=100.0, uart_note=_ULX3S_NOTE),
    "ulx3s-45f": Board("ulx3s-45f", "ULX3S_45F_Platform", "ulx3s", "ecp5", "LFE5U-45F", dsp=72,
                       bram=108, bram_bits=18432, spram=0, luts=43848, clock_in_mhz=25.0,
                       default_clock_mhz=100.0, uart_note=_ULX3S_NOTE),
    "ulx3s-85f": Board("ulx3s-85f", "ULX3S_85F_Platform", "ulx3s", "ecp5", "LFE5U-85F", dsp=156,
                       bram=208, bram_bits=18432, spram=0, luts=83640, clock_in_mhz=25.0,
                       default_clock_mhz=100.0, uart_note=_ULX3S_NOTE),
    "orangecrab-25f": Board("orangecrab-25f", "OrangeCrabR0_2_25FPlatform", "orangecrab_r0_2",
                            "ecp5", "LFE5U-25F", dsp=28, bram=56, bram_bits=18432, spram=0,
                            luts=24288, clock_in_mhz=48.0, default_clock_mhz=96.0,
                            uart_note=_CRAB_NOTE),
    "orangecrab-85f": Board("orangecrab-85f", "OrangeCrabR0_2_85FPlatform", "orangecrab_r0_2",
                            "ecp5", "LFE5U-85F", dsp=156, bram=208, bram_bits=18432, spram=0,
                            luts=83640, clock_in_mhz=48.0, default_clock_mhz=96.0,
                            uart_note=_CRAB_NOTE),
}


def get_board(name: str, where: str = "--board") -> Board:
    """Return the board called ``name``; an unknown name raises GruHwError listing valid ones."""
    try:
        return BOARDS[name.lower()]
    except (KeyError, AttributeError):
        raise GruHwError(f"{where}: unknown board {name!r}; valid boards: "
                         f"{', '.join(BOARDS)}") from None
