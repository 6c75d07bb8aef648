"""Will it fit? A pre-synthesis estimate of a board build's resources, and the choice of lanes
and widths a build makes when the user leaves them open (fastest first, then widest formats).

Hard resources are counted from the design itself: the board top (core + UART link) is
elaborated (about a second) and every memory in it is mapped to block RAMs with the rules Yosys
applies (:func:`block_rams`); hard multipliers are the MAC lanes plus, for the "dsp" profile,
the tail's products split into 18 x 18 pieces. Logic cells are estimated from a linear model
fitted to measured builds of this core (:data:`LOGIC_MODEL`; the figures it was fitted on and
its error are in the docstring there). A design whose estimate is within the model's error of
the limit is called "tight": it is tried, and a build that then does not fit moves on to the
next candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import GruHwError

__all__ = ["FitEstimate", "estimate", "block_rams", "choose", "LOGIC_MODEL",
           "resolve_weight_memory", "WEIGHT_MEMORY_CHOICES"]

#: What ``--weight-memory`` takes: a memory, or "auto" (block RAM when the model fits there,
#: else SPRAM where the device has it).
WEIGHT_MEMORY_CHOICES = ("auto", "bram", "spram")

#: Logic cells (iCE40 LC, ECP5 LUT4) = base + per_lane * lanes + per_act_bit * (act_bits - 8)
#: + per_weight_bit * (weight_bits - 8) + runtime_weights, fitted to builds of the current core
#: with the UART link, the example 12 -> 32 -> 9 (iCEBreaker, 8 lanes: 8/8 bits 4,588 LC, 8/10
#: bits 5,264, 8/8 with run-time weights 5,194; ULX3S-85F 32 lanes 16/16: 7,226 LUT; the lane
#: slope from builds of the previous core at 1, 2, 4 and 8 lanes). The weight-bit slope is not
#: measured (a guess); ``error`` is the margin, as a fraction of the device, below which an
#: estimate counts as tight. Weights in SPRAM add the flash loader and the core's weight port
#: (``flash_boot``), each doubling of the widest hidden size beyond 32 ``per_hidden_doubling``
#: (wider counters and addresses) and each layer beyond the first ``per_layer``: fitted to
#: iCEBreaker builds in SPRAM at 8 lanes, 8/8 bits (12-96-9: 5,090 LC, 12-128-9: 5,114,
#: 12-96-96-9: 5,218); with run-time weights too, the two share the weight port
#: (``runtime_with_spram``: the example, 5,256 LC). The ECP5 figures are unmeasured (guesses).
LOGIC_MODEL = {
    "ice40": {"base": 4204, "per_lane": 48, "per_act_bit": 338, "per_weight_bit": 40,
              "runtime_weights": 606, "flash_boot": 410, "per_hidden_doubling": 58,
              "per_layer": 128, "runtime_with_spram": -348, "error": 0.03},
    "ecp5": {"base": 2400, "per_lane": 110, "per_act_bit": 120, "per_weight_bit": 30,
             "runtime_weights": 900, "flash_boot": 400, "per_hidden_doubling": 60,
             "per_layer": 150, "runtime_with_spram": -300, "error": 0.10},
}


@dataclass
class FitEstimate:
    """What a build of one configuration is estimated to use, against what the board has."""

    board: str
    lanes: int
    weight_bits: int
    act_bits: int
    profile: str
    cycles_per_step: int
    used: dict[str, int]
    available: dict[str, int]
    error: float
    memories: list[dict] = field(default_factory=list)
    weight_memory: str = "bram"

    @property
    def over(self) -> dict[str, int]:
        """Resources estimated above what the board has (resource -> how many over)."""
        return {k: v - self.available[k] for k, v in self.used.items()
                if v > self.available.get(k, math.inf)}

    @property
    def fits(self) -> bool:
        """Whether every resource is estimated within the board's."""
        return not self.over

    @property
    def tight(self) -> bool:
        """Whether the logic estimate is within the model's error of the limit."""
        return self.used["lut"] > (1 - self.error) * self.available["lut"]

    def to_json(self) -> dict:
        """Return the estimate as a JSON-ready dict."""
        return {"board": self.board, "lanes": self.lanes, "weight_bits": self.weight_bits,
                "act_bits": self.act_bits, "profile": self.profile,
                "weight_memory": self.weight_memory,
                "cycles_per_step": self.cycles_per_step, "used": self.used,
                "available": self.available, "fits": self.fits, "tight": self.tight,
                "over": self.over, "logic_model_error": self.error}

    def describe(self) -> str:
        """Return one line: the configuration and its estimated use."""
        keys = ("lut", "bram", "spram", "dsp") if self.weight_memory == "spram" else \
            ("lut", "bram", "dsp")
        parts = [f"{self.used[k]}/{self.available[k]} {k.upper()}" for k in keys]
        return (f"{self.lanes} lanes, {self.weight_bits}/{self.act_bits} bits, weights in "
                f"{self.weight_memory.upper()}: {', '.join(parts)} (estimated)")


def block_rams(depth: int, width: int, read_ports: int, family, rom: bool) -> int:
    """Return the block RAMs one memory takes (0: it becomes logic).

    ``family``: a :class:`gru_hw.boards.family.Family` or its name (its block RAM shapes and
    LUT RAM limit). Each read port beyond the first duplicates the memory (the blocks have one
    read port); small read-only tables (up to 64 words) become logic, and so do memories within
    the family's LUT RAM limit (ECP5: 1 Kbit).
    """
    from .boards.family import get_family

    fam = get_family(family)
    if rom and depth <= 64:
        return 0
    if depth * width <= fam.lutram_bits:
        return 0
    best = min(math.ceil(depth / d) * math.ceil(width / w) for d, w in fam.bram_shapes)
    return best * max(1, read_ports)


def _memories(top) -> list[dict]:
    """Return every memory of an elaboratable: width, depth, ports, whether it is a ROM."""
    from amaranth.hdl import Fragment
    from amaranth.hdl._mem import MemoryInstance

    out = []

    def walk(frag) -> None:
        if isinstance(frag, MemoryInstance):
            data = frag._data
            width = data.shape.width if hasattr(data.shape, "width") else int(data.shape)
            out.append({"width": width, "depth": data.depth, "read_ports": len(frag._read_ports),
                        "rom": not frag._write_ports})
        for sub, *_ in getattr(frag, "subfragments", []):
            walk(sub)

    walk(Fragment.get(top, None))
    return out


def estimate(qm, board, lanes: int, *, runtime_weights: bool = False,
             max_steps: int | None = None, weight_memory: str = "bram",
             tail_width: int | None = None) -> FitEstimate:
    """Return the estimated resources of a ``board`` build of ``qm`` at ``lanes`` lanes.

    ``weight_memory`` "auto" estimates the memory :func:`resolve_weight_memory` picks.
    """
    from .boards import get_board
    from .boards.family import core_config_for
    from .boards.top import BoardTop
    from .memory_map import MemoryMap

    b = get_board(board) if isinstance(board, str) else board
    if weight_memory == "auto":
        return resolve_weight_memory(qm, b, lanes, runtime_weights=runtime_weights,
                                     max_steps=max_steps, tail_width=tail_width)[1]
    fam = b.family.name
    if weight_memory == "spram":
        if not b.spram:
            raise GruHwError(f"{b.name} has no SPRAM (its {b.device} has block RAM only)",
                             subject="weight_memory")
        mm = MemoryMap(qm, core_config_for(qm, b, lanes).schedule, weight_memory="spram")
        if mm.spram_blocks > b.spram:  # not buildable: say how far over, without elaborating
            return _spram_over(qm, b, lanes, mm, runtime_weights)
    config = core_config_for(qm, b, lanes, runtime_weights=runtime_weights,
                             weight_memory=weight_memory, tail_width=tail_width)
    top = BoardTop(qm, lanes, b, max_steps=max_steps, runtime_weights=runtime_weights,
                   divisor=16, timeout_cycles=1000, weight_memory=weight_memory,
                   tail_width=tail_width)
    if top.pll is not None:
        top.pll._MustUse__silence = True  # only the core and link are elaborated here
    mems = _memories(top)
    bram = sum(block_rams(m["depth"], m["width"], m["read_ports"], b.family, m["rom"])
               for m in mems)
    model = LOGIC_MODEL[fam]
    spec = qm.spec
    lut = (model["base"] + model["per_lane"] * lanes
           + model["per_act_bit"] * (spec.act_bits - 8)
           + model["per_weight_bit"] * (spec.weight_bits - 8)
           + (model["runtime_weights"] if runtime_weights else 0)
           + (model["flash_boot"] if weight_memory == "spram" else 0)
           + model["per_hidden_doubling"] * max(0.0, math.log2(max(qm.hidden_sizes) / 32))
           + model["per_layer"] * (len(qm.hidden_sizes) - 1)
           + (model["runtime_with_spram"] if runtime_weights and weight_memory == "spram" else 0))
    caps = b.resources()
    return FitEstimate(
        board=b.name, lanes=lanes, weight_bits=spec.weight_bits, act_bits=spec.act_bits,
        profile=config.profile.name, cycles_per_step=config.schedule.cycles_per_step,
        used={"lut": int(lut), "bram": bram, "dsp": config.schedule.dsp_blocks_bound,
              "spram": config.memory_map.spram_blocks},
        available={"lut": caps["lut"], "bram": caps["bram"], "dsp": caps["dsp"],
                   "spram": caps["spram"]},
        error=model["error"], memories=mems, weight_memory=weight_memory)


def _spram_over(qm, b, lanes, mm, runtime_weights) -> FitEstimate:
    """An estimate for weights that overflow the SPRAM (nothing else counted)."""
    caps = b.resources()
    sch = mm.schedule
    return FitEstimate(
        board=b.name, lanes=lanes, weight_bits=qm.spec.weight_bits, act_bits=qm.spec.act_bits,
        profile=b.core_profile(qm, lanes).name, cycles_per_step=sch.cycles_per_step,
        used={"lut": 0, "bram": 0, "dsp": 0, "spram": mm.spram_blocks},
        available={"lut": caps["lut"], "bram": caps["bram"], "dsp": caps["dsp"],
                   "spram": caps["spram"]},
        error=LOGIC_MODEL[b.family.name]["error"], weight_memory="spram")


def resolve_weight_memory(qm, board, lanes: int, *, runtime_weights: bool = False,
                          max_steps: int | None = None, requested: str = "auto",
                          tail_width: int | None = None) -> tuple[str, FitEstimate]:
    """Return (weight memory, its estimate) for a build: ``requested``, or for "auto" block
    RAM when the design is estimated to fit with it, else SPRAM when the device has SPRAM."""
    from .boards import get_board

    b = get_board(board) if isinstance(board, str) else board
    if requested != "auto":
        return requested, estimate(qm, b, lanes, runtime_weights=runtime_weights,
                                   max_steps=max_steps, weight_memory=requested,
                                   tail_width=tail_width)
    est = estimate(qm, b, lanes, runtime_weights=runtime_weights, max_steps=max_steps,
                   tail_width=tail_width)
    if est.fits or not b.spram or "bram" not in est.over:
        return "bram", est
    sp = estimate(qm, b, lanes, runtime_weights=runtime_weights, max_steps=max_steps,
                  weight_memory="spram", tail_width=tail_width)
    return ("spram", sp) if sp.fits or len(sp.over) <= len(est.over) else ("bram", est)


def spram_capacity_hint(qm, board, lanes: int) -> str:
    """Return what would fit the board's SPRAM at ``lanes`` lanes: the largest hidden size of
    this shape, and the narrowest weight width that would hold this model ('' if it fits)."""
    from dataclasses import replace

    from .boards import get_board
    from .memory_map import SPRAM_DEPTH, SPRAM_WIDTH
    from .schedule import Schedule, Shapes

    b = get_board(board) if isinstance(board, str) else board
    shapes = Shapes.of(qm)
    ww = max(qm.spec.weight_bits, 2)

    def rows_fit(sh, width) -> bool:
        wide = -(-lanes * width // SPRAM_WIDTH)
        banks = b.spram // wide if wide else 0
        return banks > 0 and Schedule(sh, min(lanes, sh.max_lanes)).weight_depth <= \
            banks * SPRAM_DEPTH

    if rows_fit(shapes, ww):
        return ""
    parts = []
    h = max(shapes.hidden_sizes)
    while h > 1 and not rows_fit(replace(shapes, hidden_sizes=tuple(
            min(x, h) for x in shapes.hidden_sizes)), ww):
        h -= 1
    parts.append(f"hidden size {h} at {ww}-bit weights")
    narrow = next((w for w in range(ww - 1, 1, -1) if rows_fit(shapes, w)), None)
    if narrow is not None:
        parts.append(f"this model at {narrow}-bit weights (--weight-bits {narrow})")
    return "would fit: " + ", or ".join(parts)


#: Widths tried when the user gives none, widest first (weights, activations).
WIDTHS = ((16, 16), (12, 12), (10, 10), (8, 10), (8, 9), (8, 8), (6, 8), (4, 8))


def choose(model, board, *, runtime_weights: bool = False, widths=WIDTHS,
           spec_for=None, weight_memory: str = "auto",
           tail_width: int | None = None) -> list[FitEstimate]:
    """Return the configurations estimated to fit, best first.

    Best is a configuration with room to place and route (not :attr:`FitEstimate.tight`), then
    the fastest (fewest cycles per step, i.e. the most lanes the board's multipliers and memories
    allow), then the widest formats (``widths``, widest first). ``spec_for(wb, ab)`` makes
    the QuantSpec of a width (default: :func:`gru_hw.quant.choose_spec`); ``weight_memory``
    as in :func:`resolve_weight_memory`. Raises GruHwError naming the resources when nothing fits.
    """
    from .boards import get_board
    from .quant import choose_spec, quantize_model

    b = get_board(board) if isinstance(board, str) else board
    spec_for = spec_for or (lambda wb, ab: choose_spec(model, wb, ab))
    from .schedule import Shapes

    options = sorted(_lane_options(b, Shapes.of(model).max_lanes), reverse=True)
    fitting, last = [], None
    for rank, (wb, ab) in enumerate(widths):
        qm = quantize_model(model, spec_for(wb, ab))
        for p in options:
            try:
                _, est = resolve_weight_memory(qm, b, p, runtime_weights=runtime_weights,
                                               requested=weight_memory, tail_width=tail_width)
            except GruHwError:
                if tail_width is None:
                    raise
                continue  # this lane count cannot take the tail width asked for
            last = est
            if est.fits:
                fitting.append((est.tight, est.cycles_per_step, rank, est))
                if not est.tight:
                    break  # fewer lanes at the same widths are slower
    if not fitting:
        over = ", ".join(f"{k.upper()} {last.used[k]}/{last.available[k]}" for k in last.over)
        hint = ""
        if b.spram and weight_memory != "bram":
            hint = spram_capacity_hint(qm, b, max(options))
            if hint:
                hint = f"; the weights overflow the SPRAM too: at {max(options)} lanes, {hint}"
        raise GruHwError(f"{b.name}: no configuration fits, down to {last.weight_bits}/"
                         f"{last.act_bits} bits and {last.lanes} lane(s) ({over}, estimated)"
                         f"{hint}")
    return [t[-1] for t in sorted(fitting, key=lambda t: t[:3])]


def _lane_options(board, limit: int) -> list[int]:
    """Lane counts worth trying on a board: powers of two and the hard-multiplier count."""
    opts = {1 << k for k in range(0, 9)} | {board.dsp}
    return [p for p in opts if p <= min(limit, board.dsp)]
