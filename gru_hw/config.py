"""The core's configuration, made once at the edge (CLI, board family or API) and passed down.

:class:`CoreProfile` says *how* the datapath is built for a kind of part (multiplier kind of the
nonlinear tail, where long delay lines live, which extra registers are inserted);
:class:`CoreConfig` adds *what* is built (the quantized model, lanes, output mode, weight port).
Nothing below the edge re-derives a default: the schedule, the memory map and every gateware
component read their choices from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from .errors import GruHwError

__all__ = ["CoreProfile", "PROFILES", "DEFAULT_PROFILE", "CoreConfig", "get_profile",
           "WEIGHT_MEMORIES", "MAX_STREAMS"]

TAIL_MULTIPLIERS = ("dsp", "lut", "seq")
#: How the MAC lanes' multipliers are built (:attr:`CoreProfile.mac_cells`).
MAC_CELLS = ("", "ecp5")
#: Where the MAC lanes' weights live: ``"bram"``, one block-RAM memory per lane, initialised by
#: the bitstream; ``"spram"``, one packed row of all lanes' weights per address in iCE40 UltraPlus
#: SB_SPRAM256KA blocks, which the bitstream cannot initialise (loaded through the weight port).
WEIGHT_MEMORIES = ("bram", "spram")
#: The most interleaved streams a core serves (each adds a copy of the hidden state).
MAX_STREAMS = 16


@dataclass(frozen=True)
class CoreProfile:
    """How a core is built.

    * ``tail_mul``: the tail's multipliers (four; five per hidden unit of a beat with
      ``tail_width`` > 1). ``"dsp"``: ``*`` with registered output (hard
      multipliers); ``"lut"``: shift-and-add in logic, one product per cycle; ``"seq"``:
      sequential shift-and-add, one product per :data:`gru_hw.gateware.arith.SEQ_STEPS` cycles
      (the smallest; the tail then takes one emitted row per SEQ_STEPS cycles).
    * ``park_read_reg``: register the park buffer's read (and the paired new sum) before the
      tail (the ECP5 critical path was the block-RAM read into the first rounding adder).
    * ``product_reset_less``: the MAC product register has no reset, so iCE40 synthesis packs
      weight/vector/product registers and the accumulator adder into the SB_MAC16.
    * ``ram_delays``: the tail's long, wide delay lines are memories, not register chains
      (a register costs a logic cell per bit and stage on iCE40).
    * ``tail_width`` (K): gate rows the shift chain hands the tail per cycle. 1: one row per
      cycle (any kind), the tail of :class:`gru_hw.gateware.tail.Tail`. A multiple of 3,
      K = 3U: the tail finishes U hidden units per cycle (:class:`gru_hw.gateware.tail_wide.
      UnitTail`: per unit two sigmoids, a tanh and their products), the chain hands it beats of
      K rows in the rowset "all" (r_j, z_j, n_j of U units), 2U in "rz", U in "n", K head
      rows; parked rows leave in beats of the same size.
    * ``mac_cells``: how the MAC lanes' multipliers are built. ``""``: ``*`` between
      registers, mapped by synthesis (Yosys maps ECP5 products to MULT18X18D with every
      register in the fabric); ``"ecp5"``: MULT18X18D instances with their own input and output
      registers (the weight, the vector element and the product registers live inside the
      DSP block: no fabric flip-flops, and the vector's fan-out to every lane has a whole cycle),
      the same latency and results. The cells are built when the configuration's
      ``spram_cells`` is True (Verilog for synthesis) and both operands fit 18 bits
      (:mod:`gru_hw.gateware.dsp`); a board family sets it for the core it synthesizes
      (:attr:`gru_hw.boards.family.Family.mac_cells`), while ``info``, ``generate`` and
      ``simulate`` keep ``""``.
    """

    name: str
    tail_mul: str = "dsp"
    park_read_reg: bool = True
    product_reset_less: bool = False
    ram_delays: bool = False
    tail_width: int = 1
    mac_cells: str = ""

    def __post_init__(self) -> None:
        if self.mac_cells not in MAC_CELLS:
            raise GruHwError(f"MAC cells must be one of {list(MAC_CELLS)}, got "
                             f"{self.mac_cells!r}")
        if self.tail_mul not in TAIL_MULTIPLIERS:
            raise GruHwError(f"tail multiplier must be one of {list(TAIL_MULTIPLIERS)}, "
                             f"got {self.tail_mul!r}")
        k = self.tail_width
        if (not isinstance(k, int) or isinstance(k, bool) or k < 1
                or (k != 1 and k % 3 != 0)):
            raise GruHwError(f"tail width must be 1 or a positive multiple of 3 (the rows of "
                             f"whole hidden units: r, z, n), got {k!r}", subject="tail_width")

    @property
    def tail_units(self) -> int:
        """Hidden units the tail finishes per cycle with tail_width K = 3U (0 for K = 1, whose
        tail takes one row of any kind per cycle)."""
        return self.tail_width // 3 if self.tail_width > 1 else 0

    def to_json(self) -> dict:
        """Return the profile as a JSON-ready dict."""
        return {"name": self.name, "tail_mul": self.tail_mul, "park_read_reg": self.park_read_reg,
                "product_reset_less": self.product_reset_less, "ram_delays": self.ram_delays,
                "tail_width": self.tail_width, "mac_cells": self.mac_cells}

    def with_(self, **changes) -> "CoreProfile":
        """Return a copy with some fields changed (named ``<name>-k<tail_width>`` when only the
        tail width changes and no name is given)."""
        from dataclasses import replace

        if all(getattr(self, k) == v for k, v in changes.items()):
            return self
        if set(changes) == {"tail_width"} and changes["tail_width"] != self.tail_width:
            base = self.name.split("-k")[0]
            changes["name"] = base if changes["tail_width"] == 1 else \
                f"{base}-k{changes['tail_width']}"
        return replace(self, **changes)


#: The profiles a build can ask for by name. "dsp" is the ECP5 (and generic) core; "seq" the
#: iCE40 UP5K core, whose eight SB_MAC16 all serve MAC lanes; "lut" a core without hard
#: multipliers in the tail that keeps one row per cycle.
PROFILES: dict[str, CoreProfile] = {
    "dsp": CoreProfile("dsp", "dsp", park_read_reg=True),
    "lut": CoreProfile("lut", "lut", park_read_reg=True),
    "seq": CoreProfile("seq", "seq", park_read_reg=False, product_reset_less=True,
                       ram_delays=True),
}
DEFAULT_PROFILE = PROFILES["dsp"]


def get_profile(profile: "CoreProfile | str | None") -> CoreProfile:
    """Return a profile given itself, its name, or None (the default).

    A name is one of :data:`PROFILES`, or one of them with a tail width: ``"dsp-k3"`` is the
    "dsp" profile with ``tail_width=3`` (the ECP5 core for many lanes, issue 13).
    """
    if profile is None:
        return DEFAULT_PROFILE
    if isinstance(profile, CoreProfile):
        return profile
    base, sep, width = str(profile).partition("-k")
    if sep and base in PROFILES and width.isdigit() and not width.startswith("0"):
        return PROFILES[base].with_(tail_width=int(width))
    if profile not in PROFILES:
        raise GruHwError(f"core profile must be one of {sorted(PROFILES)}, got {profile!r}")
    return PROFILES[profile]


@dataclass(frozen=True, eq=False)
class CoreConfig:
    """Everything a :class:`gru_hw.gateware.GRUCore` is built from.

    ``qm`` (QuantModel: shapes, QuantSpec, weights), ``lanes`` (MAC lanes P, 1..3H),
    ``profile`` (a :class:`CoreProfile` or its name), ``sequence`` (emit the top layer's h every
    step), ``runtime_weights`` (add the weight port; memories and accumulators are then sized
    for any weights the formats can hold) and ``init_weights`` (with runtime_weights: start with
    ``qm``'s weights, else zeros). The schedule and the memory map are derived here, once.

    ``weight_memory`` (:data:`WEIGHT_MEMORIES`): ``"spram"`` packs the lanes' weights into
    SB_SPRAM256KA rows, which start empty: such a core always has the weight port (its packed
    region at least) and must be loaded before it runs. Without run-time weights it keeps the
    fixed build's accumulator sizing and bias memory contents; only its own weights may be
    loaded. ``streams`` (S, default 1): the core serves S independent sequences, interleaved
    step by step as their beats arrive (a stream id on every input and output beat, a hidden
    state per stream): while one stream's step waits on its recurrence another's fills the
    lanes. ``spram_cells`` (default True): instantiate the SB_SPRAM256KA cells (Verilog,
    synthesis; simulators take Yosys's model of the cell); False: an equivalent Amaranth memory
    (Amaranth's simulator cannot run the cell).
    """

    qm: object
    lanes: int
    profile: CoreProfile = field(default=DEFAULT_PROFILE)
    sequence: bool = False
    runtime_weights: bool = False
    init_weights: bool = True
    weight_memory: str = "bram"
    spram_cells: bool = True
    streams: int = 1

    def __post_init__(self) -> None:
        s = self.streams
        if not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= MAX_STREAMS:
            raise GruHwError(f"streams must be in 1..{MAX_STREAMS}, got {s!r}",
                             subject="streams")
        if self.weight_memory not in WEIGHT_MEMORIES:
            raise GruHwError(f"weight memory must be one of {list(WEIGHT_MEMORIES)}, got "
                             f"{self.weight_memory!r}", subject="weight_memory")
        object.__setattr__(self, "profile", get_profile(self.profile))
        object.__setattr__(self, "sequence", bool(self.sequence))
        object.__setattr__(self, "runtime_weights", bool(self.runtime_weights))
        object.__setattr__(self, "init_weights",
                           bool(self.init_weights) or not self.runtime_weights)
        self.schedule  # noqa: B018 (validates lanes now, at the edge)

    @property
    def spec(self):
        """The QuantSpec."""
        return self.qm.spec

    @cached_property
    def schedule(self):
        """The exact cycle model (:class:`gru_hw.schedule.Schedule`)."""
        from .schedule import Schedule

        return Schedule(self.qm, self.lanes, profile=self.profile, streams=self.streams,
                        sequence=self.sequence)

    @cached_property
    def memory_map(self):
        """Memory layout, widths and weight-port address map (:class:`gru_hw.memory_map.MemoryMap`)."""
        from .memory_map import MemoryMap

        return MemoryMap(self.qm, self.schedule, runtime_weights=self.runtime_weights,
                         weight_memory=self.weight_memory)

    @property
    def weight_port(self) -> bool:
        """Whether the core has the weight port (run-time weights, or weights in SPRAM)."""
        return self.runtime_weights or self.weight_memory == "spram"

    def with_(self, **changes) -> "CoreConfig":
        """Return a copy with some fields changed."""
        fields = {"qm": self.qm, "lanes": self.lanes, "profile": self.profile,
                  "sequence": self.sequence, "runtime_weights": self.runtime_weights,
                  "init_weights": self.init_weights, "weight_memory": self.weight_memory,
                  "spram_cells": self.spram_cells, "streams": self.streams}
        fields.update(changes)
        return CoreConfig(**fields)

    def to_json(self) -> dict:
        """Return the configuration's choices (not the weights) as a JSON-ready dict."""
        return {"lanes": self.lanes, "profile": self.profile.to_json(), "sequence": self.sequence,
                "runtime_weights": self.runtime_weights, "weight_memory": self.weight_memory,
                "streams": self.streams}
