"""Boards gru-hw builds for: names, platforms, device resources, clocks, and how to flash them.

A board is one entry of :data:`BOARDS`; what its FPGA family contributes (PLL, synthesis
options, tools, bitstream, default flashing, resource names, core profile) is its
:class:`~gru_hw.boards.family.Family` object. This package is the top-level ``boards/`` folder
(installed as ``gru_hw.boards``): the board top (``top``), the link (``link``), ``uart``,
``pll``, ``family``; its README has the wiring and flashing notes for people.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.build import Attrs, Pins, Resource, Subsignal

from ..errors import GruHwError
from .family import ECP5, FAMILIES, FLASH_METHODS, ICE40, Family, core_config_for, get_family

__all__ = ["Board", "BOARDS", "get_board", "Family", "FAMILIES", "ICE40", "ECP5", "get_family",
           "core_config_for"]


@dataclass(frozen=True)
class Board:
    """One supported board.

    ``family`` is a :class:`~gru_hw.boards.family.Family` (its name is accepted and looked up).
    Flashing: ``flash_method`` (default: the family's; see
    :data:`gru_hw.boards.family.FLASH_METHODS`), ``loader_board`` (openFPGALoader's ``-b`` name,
    required by the openFPGALoader methods) and ``dfu_id`` (``"VID:PID"`` for the DFU suffix of
    a DFU-bootloader board). ``extra_resources``: amaranth resources added to the platform
    before the top requests its pins (e.g. a UART on expansion pins).
    """

    name: str
    platform: str  #: class name in amaranth_boards
    module: str  #: amaranth_boards module
    family: Family  #: ICE40 or ECP5 (a name is looked up)
    device: str
    dsp: int  #: hard multipliers (SB_MAC16 / MULT18X18D)
    bram: int  #: block RAMs (EBR 4 Kbit on iCE40, 18 Kbit on ECP5)
    bram_bits: int  #: bits per block RAM
    spram: int  #: iCE40 UP 16K x 16 single-port RAMs
    luts: int
    clock_in_mhz: float  #: the board oscillator
    default_clock_mhz: float  #: what the PLL makes unless asked otherwise
    uart_note: str  #: where the host's serial adapter connects
    flash_method: str | None = None  #: None: the family's default
    loader_board: str | None = None  #: openFPGALoader -b NAME
    dfu_id: str | None = None  #: "VID:PID" written into the DFU suffix before flashing
    extra_resources: tuple = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "family", get_family(self.family))
        method = self.flash_method or self.family.default_flash_method
        object.__setattr__(self, "flash_method", method)
        if method not in FLASH_METHODS:
            raise ValueError(f"board {self.name!r}: flash method must be one of "
                             f"{sorted(FLASH_METHODS)}, got {method!r}")
        if FLASH_METHODS[method][1] and not self.loader_board:
            raise ValueError(f"board {self.name!r}: flash method {method!r} needs loader_board "
                             "(openFPGALoader's -b name for the board)")
        object.__setattr__(self, "extra_resources", tuple(self.extra_resources))

    def platform_class(self):
        """Return the amaranth-boards platform class."""
        import importlib

        return getattr(importlib.import_module(f"amaranth_boards.{self.module}"), self.platform)

    def resources(self) -> dict[str, int]:
        """Return the capacity of each resource the fit check looks at."""
        return {"dsp": self.dsp, "bram": self.bram, "spram": self.spram, "lut": self.luts}

    def core_profile(self, model, lanes: int, tail_width: int | None = None):
        """Return the core profile a build at ``lanes`` lanes gets (the family's rule with this
        board's hard multipliers; ``tail_width`` None: the family's choice)."""
        return self.family.core_profile(model, lanes, self.dsp, tail_width)

    def flash_command(self, bitstream, *, persist: bool = True, env=None) -> list[str]:
        """Return the command that programs ``bitstream`` into this board."""
        return self.family.flash_command(self, bitstream, persist=persist, env=env)


_ULX3S_NOTE = "the ULX3S's own USB port (FTDI FT231X): /dev/ttyUSB0"
_CRAB_NOTE = ("a 3.3 V USB-serial adapter on the Feather pins: adapter TX -> pin 0 (board RX), "
              "adapter RX <- pin 1 (board TX), GND (the OrangeCrab's USB is not a UART)")
#: The OrangeCrab's USB is not a UART: the link uses Feather pins 0 (RX) and 1 (TX).
_CRAB_UART = Resource("uart", 0, Subsignal("rx", Pins("0", dir="i", conn=("io", 0))),
                      Subsignal("tx", Pins("1", dir="o", conn=("io", 0))),
                      Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP"))
_ULX3S = {"uart_note": _ULX3S_NOTE, "loader_board": "ulx3s"}
_CRAB = {"uart_note": _CRAB_NOTE, "flash_method": "dfu", "loader_board": "orangeCrab",
         "dfu_id": "1209:5af0", "extra_resources": (_CRAB_UART,)}

BOARDS: dict[str, Board] = {
    "icebreaker": Board("icebreaker", "ICEBreakerPlatform", "icebreaker", ICE40, "iCE40UP5K",
                        dsp=8, bram=30, bram_bits=4096, spram=4, luts=5280, clock_in_mhz=12.0,
                        default_clock_mhz=42.0,
                        uart_note="the iCEBreaker's USB port, second interface (FT2232H "
                                  "channel B): /dev/ttyUSB1"),
    "ulx3s-12f": Board("ulx3s-12f", "ULX3S_12F_Platform", "ulx3s", ECP5, "LFE5U-12F", dsp=28,
                       bram=32, bram_bits=18432, spram=0, luts=12288, clock_in_mhz=25.0,
                       default_clock_mhz=100.0, **_ULX3S),
    "ulx3s-25f": Board("ulx3s-25f", "ULX3S_25F_Platform", "ulx3s", ECP5, "LFE5U-25F", dsp=28,
                       bram=56, bram_bits=18432, spram=0, luts=24288, clock_in_mhz=25.0,
                       default_clock_mhz=100.0, **_ULX3S),
    "ulx3s-45f": Board("ulx3s-45f", "ULX3S_45F_Platform", "ulx3s", ECP5, "LFE5U-45F", dsp=72,
                       bram=108, bram_bits=18432, spram=0, luts=43848, clock_in_mhz=25.0,
                       default_clock_mhz=100.0, **_ULX3S),
    "ulx3s-85f": Board("ulx3s-85f", "ULX3S_85F_Platform", "ulx3s", ECP5, "LFE5U-85F", dsp=156,
                       bram=208, bram_bits=18432, spram=0, luts=83640, clock_in_mhz=25.0,
                       default_clock_mhz=100.0, **_ULX3S),
    "orangecrab-25f": Board("orangecrab-25f", "OrangeCrabR0_2_25FPlatform", "orangecrab_r0_2",
                            ECP5, "LFE5U-25F", dsp=28, bram=56, bram_bits=18432, spram=0,
                            luts=24288, clock_in_mhz=48.0, default_clock_mhz=96.0, **_CRAB),
    "orangecrab-85f": Board("orangecrab-85f", "OrangeCrabR0_2_85FPlatform", "orangecrab_r0_2",
                            ECP5, "LFE5U-85F", dsp=156, bram=208, bram_bits=18432, spram=0,
                            luts=83640, clock_in_mhz=48.0, default_clock_mhz=96.0, **_CRAB),
}


def get_board(name: str) -> Board:
    """Return the board called ``name``; an unknown name raises GruHwError listing valid ones."""
    try:
        return BOARDS[name.lower()]
    except (KeyError, AttributeError):
        raise GruHwError(f"unknown board {name!r}; valid boards: {', '.join(BOARDS)}",
                         subject="board") from None
