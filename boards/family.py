"""FPGA families as objects: what differs between an iCE40 and an ECP5 build, in one place.

A :class:`Family` owns the PLL (divider search and primitive), the synthesis options, the
place-and-route and pack tools, the bitstream file name, how boards of the family are flashed
by default, the nextpnr resource (bel) names, and the core profile a device of the family gets.
A board (:class:`gru_hw.boards.Board`) is a table entry that names its family; nothing else
branches on the family's name.

:func:`core_config_for` is the one place the core configuration of a board build is made:
``gru-hw build`` builds it, and ``info --board`` / ``simulate --board`` describe and run it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from amaranth import Module

from ..config import PROFILES, CoreConfig, CoreProfile
from .pll import (ECP5PLLConfig, ICE40PLLConfig, PLLClockDomain, ecp5_pll, ecp5_pll_instance,
                  ice40_pll, ice40_pll_instance)

if TYPE_CHECKING:
    from . import Board

__all__ = ["FlashTool", "Family", "ICE40Family", "ECP5Family", "ICE40", "ECP5", "FAMILIES",
           "FLASH_METHODS", "get_family", "core_config_for"]


@dataclass(frozen=True)
class FlashTool:
    """A programming tool: its command, the variable that overrides it, how to install it."""

    command: str
    env_var: str
    install: str

    def resolve(self, env: Mapping[str, str] | None = None) -> str:
        """Return the command to run: ``$ENV_VAR`` when set, else :attr:`command`."""
        env = os.environ if env is None else env
        return env.get(self.env_var) or self.command


ICEPROG = FlashTool("iceprog", "ICEPROG", "apt-get install fpga-icestorm")
OPENFPGALOADER = FlashTool("openFPGALoader", "OPENFPGALOADER", "apt-get install openfpgaloader")

#: Flash method -> (tool, needs an openFPGALoader board name).
#: ``iceprog``: SPI flash through the board's FTDI (``-S``: SRAM only, when not persisting);
#: ``jtag``: ``openFPGALoader -b NAME`` over the board's JTAG (``-f``: into its SPI flash);
#: ``dfu``: ``openFPGALoader -b NAME`` through a DFU bootloader (always the flash; the board's
#: ``dfu_id`` VID:PID is written into the bitstream's DFU suffix first, when dfu-suffix exists).
FLASH_METHODS: dict[str, tuple[FlashTool, bool]] = {
    "iceprog": (ICEPROG, False),
    "jtag": (OPENFPGALOADER, True),
    "dfu": (OPENFPGALOADER, True),
}


class Family:
    """An FPGA family: the knowledge a board build needs beyond the board's own table entry.

    Subclasses set the class attributes and implement :meth:`pll_config` and :meth:`add_pll`.
    """

    #: Short name, as boards and report.json spell it.
    name: str = ""
    #: Place-and-route and pack tools, as the amaranth platform's command list names them.
    pnr_tool: str = ""
    pack_tool: str = ""
    #: Bitstream file suffix (the build's file is ``top`` + this).
    bitstream_suffix: str = ""
    #: How boards of the family are flashed unless their entry says otherwise (FLASH_METHODS).
    default_flash_method: str = ""
    #: Normalised resource name -> nextpnr bel types (report.json utilization).
    resources: Mapping[str, tuple[str, ...]] = {}
    #: Regular expression of the flip-flop cell types in Yosys' statistics.
    ff_cells: str = ""
    #: The Yosys synthesis command of the family (the platform's, e.g. ``synth_ice40``).
    synth_command: str = ""
    #: Block RAM shapes (depth, width) a memory can be cut into.
    bram_shapes: tuple[tuple[int, int], ...] = ()
    #: Memories up to this many bits become LUT RAM rather than block RAM (0: no LUT RAM).
    lutram_bits: int = 0
    #: Extra nextpnr options (after the flow's own --report and --timing-allow-fail).
    nextpnr_extra: str = ""
    #: How a synthesized core's MAC multipliers are built (:attr:`gru_hw.config.CoreProfile.
    #: mac_cells`): the family's own DSP cells with their registers, or "" (``*``, mapped by
    #: synthesis). Only the synthesized core (board builds, netlist checks) takes it: simulation
    #: and ``generate`` keep the ``*`` form, which computes the same.
    mac_cells: str = ""

    #: The synthesis tool (common to both families).
    synth_tool = "yosys"
    #: Options every build passes to nextpnr.
    NEXTPNR_OPTS = "--report nextpnr-report.json --timing-allow-fail"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # ---- tools ----
    @property
    def tools(self) -> dict[str, str]:
        """Tool -> build stage it runs (synthesis, place and route, pack)."""
        return {self.synth_tool: "synthesis", self.pnr_tool: "place and route",
                self.pack_tool: "pack"}

    @property
    def yowasp_tools(self) -> dict[str, str]:
        """Tool -> the YoWASP command that provides it."""
        return {t: f"yowasp-{t}" for t in self.tools}

    def synth_opts(self, board: "Board", *, runtime_weights: bool = False) -> str | None:
        """Return the Yosys ``synth_*`` options for a build (None: the platform's default)."""
        return None

    def nextpnr_opts(self, board: "Board") -> str:
        """Return the nextpnr options for a build."""
        return f"{self.NEXTPNR_OPTS} {self.nextpnr_extra}".strip()

    def build_overrides(self, board: "Board", *, runtime_weights: bool = False) -> dict:
        """Return the keyword overrides for the amaranth platform's ``prepare``."""
        overrides = {"nextpnr_opts": self.nextpnr_opts(board)}
        synth = self.synth_opts(board, runtime_weights=runtime_weights)
        if synth is not None:
            overrides["synth_opts"] = synth
        return overrides

    def bitstream_name(self, top: str = "top") -> str:
        """Return the bitstream file name of the design ``top``."""
        return top + self.bitstream_suffix

    def is_dsp(self, resource: str) -> bool:
        """Tell whether ``resource`` (normalised or a nextpnr bel) is a hard multiplier."""
        return resource == "dsp" or resource in self.resources.get("dsp", ())

    # ---- PLL ----
    def pll_config(self, fin_mhz: float, fout_mhz: float, *, not_above: bool = False):
        """Return the PLL settings closest to ``fout_mhz`` (their ``fout_mhz``: what it makes)."""
        raise NotImplementedError

    def add_pll(self, m: Module, config, clk_port, clk, locked) -> None:
        """Add the PLL primitive for ``config`` to ``m`` (``clk_port``: the board clock resource
        requested with ``dir="-"``; ``clk``: the output clock signal; ``locked``: lock flag)."""
        raise NotImplementedError

    def pll_domain(self, clk_port, fin_mhz: float, fout_mhz: float, *, not_above: bool = False,
                   por_cycles: int = 1024) -> PLLClockDomain:
        """Return the elaboratable that drives ``sync`` from the board clock through the PLL."""
        return PLLClockDomain(self, clk_port, fin_mhz, fout_mhz, not_above=not_above,
                              por_cycles=por_cycles)

    # ---- core ----
    #: Tail widths tried by the automatic choice (:meth:`core_profile`).
    TAIL_WIDTHS = (1, 3, 6)
    #: A wider tail is chosen only when it saves at least this fraction of the step's cycles.
    TAIL_WIDTH_GAIN = 0.05

    def core_profile(self, model, lanes: int, dsp_budget: int | None,
                     tail_width: int | None = None) -> CoreProfile:
        """Return the core profile for ``lanes`` on a device with ``dsp_budget`` hard multipliers.

        ``model``: a QuantModel, GRUModel or Shapes. The "seq" profile (the tail's four products
        as small sequential logic multipliers) when the lanes plus the tail would need more hard
        multipliers than the device has (:attr:`gru_hw.schedule.Schedule.dsp_blocks_bound`), so
        every hard multiplier serves a MAC lane; else "dsp". Without a budget: "dsp".

        ``tail_width`` (K, :class:`gru_hw.config.CoreProfile`): as given; None chooses it: the
        narrowest of :data:`TAIL_WIDTHS` whose step is fastest, a wider one only when it saves
        at least :data:`TAIL_WIDTH_GAIN` of the cycles and its multipliers fit the budget (with
        many lanes the one-row tail, not the multipliers, sets the step time).
        """
        from ..errors import GruHwError
        from ..schedule import Schedule

        if dsp_budget is None:
            base = PROFILES["dsp"]
        else:
            need = Schedule(model, lanes, profile=PROFILES["dsp"]).dsp_blocks_bound
            base = PROFILES["seq"] if need > dsp_budget else PROFILES["dsp"]
        if tail_width is not None:
            profile = base.with_(tail_width=tail_width)
            sch = Schedule(model, lanes, profile=profile)
            if dsp_budget is not None and tail_width > 1 and sch.dsp_blocks_bound > dsp_budget:
                raise GruHwError(f"{lanes} lanes with tail width {tail_width} need about "
                                 f"{sch.dsp_blocks_bound} hard multipliers, the device has "
                                 f"{dsp_budget}", subject="tail_width")
            return profile
        if base.name != "dsp":
            return base  # no hard multiplier left for a wider tail
        best, best_cycles = base, Schedule(model, lanes, profile=base).cycles_per_step
        for k in self.TAIL_WIDTHS[1:]:
            cand = base.with_(tail_width=k)
            sch = Schedule(model, lanes, profile=cand)
            if dsp_budget is not None and sch.dsp_blocks_bound > dsp_budget:
                break
            if sch.cycles_per_step <= (1 - self.TAIL_WIDTH_GAIN) * best_cycles:
                best, best_cycles = cand, sch.cycles_per_step
        return best

    # ---- flashing ----
    def flash_tool(self, board: "Board") -> FlashTool:
        """Return the tool that programs ``board``."""
        return FLASH_METHODS[board.flash_method][0]

    def flash_command(self, board: "Board", bitstream: str | os.PathLike, *,
                      persist: bool = True, env: Mapping[str, str] | None = None) -> list[str]:
        """Return the command that programs ``bitstream`` into ``board``.

        ``persist``: into the configuration flash (survives power-off) where the method has a
        choice. ``env`` (default: the process environment) may override the tool's command.
        """
        tool = self.flash_tool(board).resolve(env)
        bit = str(bitstream)
        method = board.flash_method
        if method == "iceprog":
            return [tool, bit] if persist else [tool, "-S", bit]
        if method == "jtag":
            return [tool, "-b", board.loader_board] + (["-f"] if persist else []) + [bit]
        if method == "dfu":
            return [tool, "-b", board.loader_board, bit]
        raise ValueError(f"{board.name}: unknown flash method {method!r}")

    def flash_data_command(self, board: "Board", path: str | os.PathLike, offset: int, *,
                           env: Mapping[str, str] | None = None) -> list[str]:
        """Return the command that writes the file ``path`` into ``board``'s configuration
        flash at byte ``offset`` (the weight image of an SPRAM build)."""
        tool = self.flash_tool(board).resolve(env)
        if board.flash_method == "iceprog":
            where = f"{offset // 1024}k" if offset % 1024 == 0 else str(offset)
            return [tool, "-o", where, str(path)]
        if board.flash_method == "jtag":
            return [tool, "-b", board.loader_board, "-f", "-o", str(offset), str(path)]
        raise ValueError(f"{board.name}: cannot write data into the flash with "
                         f"{board.flash_method}")

    def flash_prepare(self, board: "Board", bitstream: str | os.PathLike) -> list[list[str]]:
        """Return the commands to run on the bitstream before flashing (each optional: skipped
        when its tool is missing), e.g. the DFU suffix of a DFU-bootloader board."""
        if board.flash_method == "dfu" and board.dfu_id:
            vid, pid = board.dfu_id.split(":")
            return [["dfu-suffix", "-v", vid, "-p", pid, "-a", str(bitstream)]]
        return []


class ICE40Family(Family):
    """Lattice iCE40 (nextpnr-ice40, icepack, SB_PLL40_PAD, SB_MAC16)."""

    name = "ice40"
    pnr_tool = "nextpnr-ice40"
    pack_tool = "icepack"
    bitstream_suffix = ".bin"
    default_flash_method = "iceprog"
    resources = {"lut": ("ICESTORM_LC",), "dsp": ("ICESTORM_DSP",), "bram": ("ICESTORM_RAM",),
                 "spram": ("ICESTORM_SPRAM",), "pll": ("ICESTORM_PLL",), "io": ("SB_IO",)}
    ff_cells = r"SB_DFF\w*"
    synth_command = "synth_ice40"
    bram_shapes = ((256, 16), (512, 8), (1024, 4), (2048, 2))  # SB_RAM40_4K

    def synth_opts(self, board: "Board", *, runtime_weights: bool = False) -> str | None:
        """``-dsp`` (else multipliers become logic: one 16 x 16 is ~1000 LUTs), and on UltraPlus
        parts ``-device u`` unless the build has run-time weights.

        ``-device u``: ABC9 maps with the UP5K's (slower) LUT/carry delays instead of the
        default HX ones. iCEBreaker 12-32-9, 8 lanes 8/8, same netlist input, nextpnr default
        seed: 4713 -> 4705 LC, routed Fmax 34.20 -> 40.10 MHz. (``-dff``: YoWASP Yosys runs out
        of wasm stack on this design; ``-abc9`` is already the default of synth_ice40.) Not with
        run-time weights: there it costs LCs (8 lanes 8/8: 5253 LC, 30.05 MHz without;
        5289/5280 LC, does not fit, with).
        """
        up = board.device.startswith("iCE40UP") and not runtime_weights
        return "-dsp -device u" if up else "-dsp"

    def pll_config(self, fin_mhz: float, fout_mhz: float, *,
                   not_above: bool = False) -> ICE40PLLConfig:
        return ice40_pll(fin_mhz, fout_mhz, not_above=not_above)

    def add_pll(self, m: Module, config, clk_port, clk, locked) -> None:
        # SB_PLL40_PAD takes the package pin itself: the board clock must be the PLL's pad.
        m.submodules.pll = ice40_pll_instance(config, clk_port, clk, locked)


class ECP5Family(Family):
    """Lattice ECP5 (nextpnr-ecp5, ecppack, EHXPLLL, MULT18X18D)."""

    name = "ecp5"
    pnr_tool = "nextpnr-ecp5"
    pack_tool = "ecppack"
    bitstream_suffix = ".bit"
    default_flash_method = "jtag"
    mac_cells = "ecp5"
    #: router2: on the 96-lane example (ULX3S-85F) router1 had not finished after 39 minutes;
    #: router2 converges, in minutes once the high-fanout nets are split (docs/benchmarks.md)
    nextpnr_extra = "--router router2"
    resources = {"lut": ("TRELLIS_COMB",), "ff": ("TRELLIS_FF",), "dsp": ("MULT18X18D",),
                 "bram": ("DP16KD",), "pll": ("EHXPLLL",), "io": ("TRELLIS_IO",)}
    ff_cells = r"TRELLIS_FF"
    synth_command = "synth_ecp5"
    bram_shapes = ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))  # DP16KD
    lutram_bits = 1024  # TRELLIS_DPR16X4

    def pll_config(self, fin_mhz: float, fout_mhz: float, *,
                   not_above: bool = False) -> ECP5PLLConfig:
        return ecp5_pll(fin_mhz, fout_mhz, not_above=not_above)

    def add_pll(self, m: Module, config, clk_port, clk, locked) -> None:
        from amaranth.lib import io

        m.submodules.clk_buf = buf = io.Buffer("i", clk_port)
        m.submodules.pll = ecp5_pll_instance(config, buf.i, clk, locked)


ICE40 = ICE40Family()
ECP5 = ECP5Family()
#: Family name -> family object.
FAMILIES: dict[str, Family] = {f.name: f for f in (ICE40, ECP5)}


def get_family(family: Family | str) -> Family:
    """Return the family object given itself or its name (an unknown name raises ValueError)."""
    if isinstance(family, Family):
        return family
    try:
        return FAMILIES[family]
    except (KeyError, TypeError):
        raise ValueError(f"unknown FPGA family {family!r}; known: {', '.join(FAMILIES)}") from None


def core_config_for(qm, board: "Board | str", lanes: int, *, runtime_weights: bool = False,
                    sequence: bool = False, weight_memory: str = "bram",
                    tail_width: int | None = None, streams: int = 1,
                    synthesis: bool = False) -> CoreConfig:
    """Return the core configuration a build of ``qm`` for ``board`` at ``lanes`` lanes makes.

    ``board`` is a :class:`gru_hw.boards.Board` or its name. The profile comes from the board's
    family and hard-multiplier count (:meth:`Family.core_profile`); ``runtime_weights`` adds the
    weight port (the memories start with ``qm``'s weights); ``sequence`` emits the top layer's
    h every step (simulation: a board build has ``sequence=False``); ``weight_memory`` "spram"
    puts the weights in the device's SPRAM (:func:`gru_hw.fit.resolve_weight_memory` picks one
    for "auto"); ``tail_width`` K (None: the family's choice, :meth:`Family.core_profile`);
    ``streams`` S: interleaved streams, each with its own hidden state (1..16); ``synthesis``:
    the core a build synthesizes, with the family's MAC cells (:attr:`Family.mac_cells`).
    Lanes outside 1..3H, or SPRAM the board lacks or the model overflows, raise GruHwError.
    """
    from ..errors import GruHwError

    if isinstance(board, str):
        from . import get_board

        board = get_board(board)
    profile = board.core_profile(qm, lanes, tail_width)
    if synthesis:
        profile = profile.with_(mac_cells=board.family.mac_cells)
    config = CoreConfig(qm, lanes, profile, sequence=sequence, runtime_weights=runtime_weights,
                        weight_memory=weight_memory, streams=streams)
    if weight_memory == "spram":
        need = config.memory_map.spram_blocks
        if not board.spram:
            raise GruHwError(f"{board.name} has no SPRAM (its {board.device} has block RAM only)",
                             subject="weight_memory")
        if need > board.spram:
            mm = config.memory_map
            raise GruHwError(
                f"the weights need {need} SPRAM blocks ({mm.weight_depth} rows of {mm.row_width} "
                f"bits), {board.name} has {board.spram}", subject="weight_memory")
    return config

