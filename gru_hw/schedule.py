"""The cycle-exact schedule of :class:`gru_hw.gateware.GRUCore`: the cost model the gateware implements.

One object, :class:`Schedule`, describes the *program* the core's controller runs (a list of
matrix-vector passes per time step), the pipeline depths of every datapath element, and from those
an exact event model of the controller. The gateware reads its constants from here (phase table,
weight-memory layout, tail latencies), and the tests check that the simulated core takes exactly the
cycles this model predicts.

Every latency here is the sum of the gateware components' own declared latencies (controller
issue, MAC lanes, chain exit, requantizers, PWL units, tail multipliers): one source of truth,
checked against simulation component by component in tests/test_components.py.

Architecture in one paragraph (details in :mod:`gru_hw.gateware.core`): P MAC lanes work row-parallel.
A *phase* multiplies a set of gate rows (``rows``) by one vector (``source``): the rows are cut
into ``groups`` of P (lane p takes row g*P + p of the group) and every group walks the ``cols``
elements of the vector, one per cycle. A gate pre-activation needs two phases (the input part
W_i x and the recurrent part W_h h, with different fraction bits); the first one parks its
accumulators in a small per-lane buffer, the second one *emits*: when a group ends, its P results
(paired with the parked ones) are loaded into a shift chain that feeds the nonlinear tail one row
per cycle, or with the profile's ``tail_width`` K > 1 one *beat* of rows per cycle (``beat``
rows of the phase, aligned to multiples of ``beat`` in the phase's row order: a group that
starts inside a beat sends that beat's rest first). Because the input part of step t+1 does
not depend on h_t, layer 0 runs it first and it overlaps the tail of step t; upper layers run their recurrent part first (it only needs their own
h_{t-1}) and their input part (which needs h of the layer below, step t) second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import CoreProfile, get_profile
from .errors import GruHwError

SOURCES = ("x", "h_below", "h_own", "rh", "h_top")
ROWSETS = ("all", "rz", "n", "head")


@dataclass(frozen=True)
class Phase:
    """One matrix-vector pass of the controller's program.

    ``layer`` (-1 for the head), ``rowset`` (which gate rows: "all" = r0,z0,n0,r1,... ; "rz" =
    r0,z0,r1,z1,... ; "n" ; "head"), ``source`` (the vector: "x" the input beat, "h_below" the
    new h of layer-1, "h_own" the layer's own h_{t-1}, "rh" the reset_before r*h vector, "h_top"
    the top layer's h for the head), ``emit`` (False: park the accumulators in the buffer; True:
    send the rows to the tail), ``rows``, ``cols``, ``groups``, the first weight address
    ``waddr`` in the lane memories, the first row ``brow`` of its biases in the shared bias
    memory, the first word ``urow`` of its rows in the park buffer (one word per beat in each
    of its ``beat`` banks), the rows per beat ``beat`` (1 with tail width 1), and the controller
    flags ``accept`` (takes the input beat),
    ``first_h_read`` (the layer's first pass over its own h this step: latches the zero state and
    marks the layer busy), ``final`` (the pass whose rows complete the layer's step, or the
    head), ``rz_final`` (reset_before: the pass whose rows produce r*h and z).
    """

    layer: int
    rowset: str
    source: str
    emit: bool
    rows: int
    cols: int
    groups: int
    waddr: int
    brow: int = 0
    urow: int = 0
    beat: int = 1
    accept: bool = False
    first_h_read: bool = False
    final: bool = False
    rz_final: bool = False

    @property
    def x_like(self) -> bool:
        """Whether the vector is the layer's input (its accumulator has the input fraction bits)."""
        return self.source in ("x", "h_below")

    def group_rows(self, g: int, lanes: int) -> int:
        """Rows in group g (the last group may be partial)."""
        return min(lanes, self.rows - g * lanes)

    def group_lead(self, g: int, lanes: int) -> int:
        """Rows of group g's first beat that belong to the group before (0 when aligned)."""
        return (g * lanes) % self.beat

    def group_beats(self, g: int, lanes: int) -> int:
        """Beats in which group g's rows leave the shift chain."""
        return _ceil_div(self.group_lead(g, lanes) + self.group_rows(g, lanes), self.beat)

    @property
    def beats(self) -> int:
        """Beat indices of the phase (words of each park or bias bank it uses)."""
        return _ceil_div(self.rows, self.beat)

    @property
    def cycles(self) -> int:
        """Issue cycles of the whole phase (without stalls)."""
        return self.groups * self.cols


@dataclass(frozen=True)
class Shapes:
    """The sizes a schedule depends on."""

    input_size: int
    hidden_sizes: tuple[int, ...]
    reset_after: bool
    head_size: int | None = None

    @classmethod
    def of(cls, model) -> "Shapes":
        """Return the shapes of a QuantModel, a GRUModel or a Shapes."""
        if isinstance(model, Shapes):
            return model
        if hasattr(model, "hidden_sizes"):  # QuantModel
            head = int(model.head_w.shape[0]) if model.head_w is not None else None
            return cls(int(model.input_size), tuple(int(h) for h in model.hidden_sizes),
                       bool(model.reset_after), head)
        if hasattr(model, "layers"):  # GRUModel
            head = model.head.output_size if model.head is not None else None
            return cls(model.input_size, tuple(l.hidden_size for l in model.layers),
                       bool(model.reset_after), head)
        raise TypeError(f"cannot take shapes from {type(model).__name__}")

    @property
    def max_lanes(self) -> int:
        """The most MAC lanes a core can use: 3H of the widest layer (one per gate row)."""
        return 3 * max(self.hidden_sizes)

    def describe(self) -> str:
        """Return e.g. ``12 inputs, hidden [32], head 9, reset_after``."""
        return (f"{self.input_size} inputs, hidden {list(self.hidden_sizes)}, head "
                f"{self.head_size}, {'reset_after' if self.reset_after else 'reset_before'}")

    def layer_input_size(self, k: int) -> int:
        """Inputs of layer k."""
        return self.input_size if k == 0 else self.hidden_sizes[k - 1]

    @property
    def output_size(self) -> int:
        """Outputs per sequence."""
        return self.head_size if self.head_size is not None else self.hidden_sizes[-1]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Schedule:
    """The exact cycle model of a GRUCore with ``lanes`` MAC lanes.

    ``model`` is a QuantModel, a GRUModel or :class:`Shapes`. ``profile`` (a
    :class:`gru_hw.config.CoreProfile` or its name) says how the core is built: its tail
    multipliers change the tail latencies and, for "seq", the rate at which emitted rows leave
    the shift chain (one per SEQ_STEPS cycles: no cycles lost while every emitting group has at
    least SEQ_STEPS * lanes columns, e.g. 8 lanes, H = 32); its extra registers change the
    latency from the MAC lanes to the tail; its tail width K makes every group leave the chain
    in beats of up to K rows (:meth:`beat_rows`, :meth:`Phase.group_beats`) instead of one row
    per cycle. ``streams`` (S) interleaved sequences keep a hidden state each
    (:meth:`run_beats`); ``sequence`` (the top layer's h is output every step) matters only
    with S > 1, where the output register is shared.
    """

    shapes: Shapes
    lanes: int
    profile: CoreProfile
    streams: int = 1
    sequence: bool = False
    phases: tuple[Phase, ...] = field(init=False, repr=False)
    step_phases: int = field(init=False, repr=False)

    def __init__(self, model, lanes: int, *, profile: CoreProfile | str | None = None,
                 streams: int = 1, sequence: bool = False) -> None:
        shapes = Shapes.of(model)
        if not isinstance(streams, int) or isinstance(streams, bool) or streams < 1:
            raise GruHwError(f"streams must be a positive integer, got {streams!r}")
        object.__setattr__(self, "streams", streams)
        object.__setattr__(self, "sequence", bool(sequence))
        object.__setattr__(self, "shapes", shapes)
        limit = shapes.max_lanes
        if not isinstance(lanes, int) or isinstance(lanes, bool) or not 1 <= lanes <= limit:
            raise GruHwError(f"lanes must be in 1..3H = {limit}, got {lanes!r}")
        object.__setattr__(self, "lanes", lanes)
        object.__setattr__(self, "profile", get_profile(profile))
        phases, n_step = self._build_program()
        object.__setattr__(self, "phases", tuple(phases))
        object.__setattr__(self, "step_phases", n_step)

    @property
    def tail_mul(self) -> str:
        """The tail's multiplier kind ("dsp", "lut" or "seq")."""
        return self.profile.tail_mul

    @property
    def tail_width(self) -> int:
        """K: the most rows the shift chain hands the tail (or parks) per cycle."""
        return self.profile.tail_width

    def beat_rows(self, rowset: str) -> int:
        """Rows per beat of a rowset: 1 with tail width 1; with K = 3U, K in "all" and "head",
        2U in "rz", U in "n" (the tail finishes U hidden units per beat)."""
        k = self.profile.tail_width
        if k == 1:
            return 1
        return {"all": k, "rz": 2 * k // 3, "n": k // 3, "head": k}[rowset]

    # ---- the program ---------------------------------------------------------------------------
    def _build_program(self) -> tuple[list[Phase], int]:
        sh = self.shapes
        p = self.lanes
        out: list[Phase] = []
        waddr = brow = 0

        def add(layer, rowset, source, emit, rows, **flags):
            nonlocal waddr, brow
            cols = (sh.layer_input_size(layer) if source in ("x", "h_below")
                    else sh.hidden_sizes[layer] if layer >= 0 else sh.hidden_sizes[-1])
            groups = _ceil_div(rows, p)
            beat = self.beat_rows(rowset)
            # the n rows of reset_before follow the layer's r and z rows in the park buffer
            urow = (_ceil_div(2 * sh.hidden_sizes[layer], self.beat_rows("rz"))
                    if rowset == "n" and not sh.reset_after else 0)
            out.append(Phase(layer, rowset, source, emit, rows, cols, groups, waddr, brow, urow,
                             beat, **flags))
            waddr += groups * cols
            brow += rows

        for k, hk in enumerate(sh.hidden_sizes):
            xs = "x" if k == 0 else "h_below"
            if sh.reset_after:
                if k == 0:
                    add(k, "all", xs, False, 3 * hk, accept=True)
                    add(k, "all", "h_own", True, 3 * hk, first_h_read=True, final=True)
                else:
                    add(k, "all", "h_own", False, 3 * hk, first_h_read=True)
                    add(k, "all", xs, True, 3 * hk, final=True)
            else:
                if k == 0:
                    add(k, "rz", xs, False, 2 * hk, accept=True)
                    add(k, "rz", "h_own", True, 2 * hk, first_h_read=True, rz_final=True)
                else:
                    add(k, "rz", "h_own", False, 2 * hk, first_h_read=True)
                    add(k, "rz", xs, True, 2 * hk, rz_final=True)
                add(k, "n", xs, False, hk)
                add(k, "n", "rh", True, hk, final=True)
        n_step = len(out)
        if sh.head_size is not None:
            add(-1, "head", "h_top", True, sh.head_size, final=True)
        return out, n_step

    # ---- pipeline depths: sums of the components' declared latencies ---------------------------
    @property
    def mac_latency(self) -> int:
        """Cycles from issuing a group's last column to its first row entering the tail.

        Controller issue (memory reads) + MAC lanes (operands to sums) + shift chain and exit
        (sums loaded to the first row at the tail's input).
        """
        from .gateware.chain import ChainExit
        from .gateware.controller import Controller
        from .gateware.mac import MACLanes

        return (Controller.ISSUE_LATENCY + MACLanes.LATENCY
                + ChainExit.latency_of(self.profile))

    @property
    def tail_interval(self) -> int:
        """Cycles between two emitted rows entering the tail (1, or SEQ_STEPS with "seq")."""
        from .gateware.tail import Tail

        return Tail.interval_of(self.profile)

    @property
    def _tail(self):
        from .gateware.tail import TailLatency

        return TailLatency(self.profile, self.shapes.reset_after)

    @property
    def tail_rz_latency(self) -> int:
        """Cycles from an r/z row entering the tail to its result being written."""
        return self._tail.rz

    @property
    def tail_n_latency(self) -> int:
        """Cycles from an n row entering the tail to the new h being written."""
        return self._tail.n

    @property
    def tail_head_latency(self) -> int:
        """Cycles from a head row entering the tail to its output being written."""
        return self._tail.head

    # ---- sizes ---------------------------------------------------------------------------------
    @property
    def mac_units(self) -> int:
        """MAC lanes of the matrix-vector engine."""
        return self.lanes

    @property
    def tail_multipliers(self) -> int:
        """Multipliers in the nonlinear tail: sigmoid and tanh slope, r*hn or r*h, z*(h-n);
        with tail width K = 3U, per hidden unit of a beat two sigmoid slopes, the tanh slope and
        the two products."""
        u = self.profile.tail_units
        return 5 * u if u else 4

    @property
    def multipliers(self) -> int:
        """All multipliers (MAC lanes plus the tail's)."""
        return self.lanes + self.tail_multipliers

    @property
    def dsp_multipliers(self) -> int:
        """Multipliers built with ``*`` (mapped to DSP blocks by synthesis)."""
        return self.lanes + (self.tail_multipliers if self.tail_mul == "dsp" else 0)

    @property
    def dsp_blocks_bound(self) -> int:
        """Hard multiplier blocks the core may take: one per lane, and on the "dsp" profile two
        for each tail product (some are wider than one 16 x 16 or 18 x 18 block)."""
        return self.lanes + (2 * self.tail_multipliers if self.tail_mul == "dsp" else 0)

    @property
    def weight_depth(self) -> int:
        """Words per lane weight memory (one time step's program plus the head)."""
        return sum(ph.groups * ph.cols for ph in self.phases)

    @property
    def bias_rows(self) -> int:
        """Words of the shared bias ROM (one per row of every phase)."""
        return sum(ph.rows for ph in self.phases)

    @property
    def buffer_rows(self) -> int:
        """Words of each park buffer bank (one per beat of the largest layer's gate rows; with
        tail width 1, one per gate row)."""
        return max(ph.urow + ph.beats for ph in self.phases if ph.layer >= 0)

    @property
    def park_banks(self) -> int:
        """Banks of the park buffer: one per row of a beat (K)."""
        return self.profile.tail_width

    @property
    def macs_per_step(self) -> int:
        """Multiply-accumulates of one time step, all layers: sum 3H(I+H)."""
        sh = self.shapes
        return sum(3 * h * (sh.layer_input_size(k) + h) for k, h in enumerate(sh.hidden_sizes))

    @property
    def ideal_cycles_per_step(self) -> int:
        """The floor ceil(sum 3H(I+H) / P)."""
        return _ceil_div(self.macs_per_step, self.lanes)

    @property
    def issue_cycles_per_step(self) -> int:
        """Issue cycles of one step's program without stalls (>= ideal: partial groups)."""
        return sum(ph.cycles for ph in self.phases[: self.step_phases])

    # ---- the event model -----------------------------------------------------------------------
    def run(self, lengths, *, trace: bool = False):
        """Return the cycles of each sequence in ``lengths`` sent back to back (one stream).

        Inputs always valid and outputs always ready. The count for a sequence runs from its first
        input beat accepted to its (last) output beat accepted, as :func:`gru_hw.amaranth_sim.simulate`
        measures it. With ``trace`` also return the accept cycle of every step.
        """
        beats = [(0, int(t_len), step) for t_len in lengths for step in range(int(t_len))]
        acc, outs = self.run_beats([(s_, step == n - 1) for s_, n, step in beats])
        cycles, i = [], 0
        for t_len in lengths:
            i += int(t_len)
            cycles.append(outs[i - 1] - acc[i - int(t_len)])
        if trace:
            return cycles, acc
        return cycles

    def run_beats(self, beats) -> tuple[list[int], list[int | None]]:
        """The exact event model: ``beats`` is the input in arrival order, one ``(stream, last)``
        per time step (a sequence's steps of one stream in order, other streams' steps
        interleaved anywhere). Inputs always valid, outputs always ready.

        Returns ``(accepts, outputs)``: the cycle each beat is accepted and the cycle its output
        beat is accepted (None for a beat without one: not the last of its sequence, outside
        sequence mode). Each stream has its own hidden state, so a step waits only on its own
        stream's previous step; with several streams the output register is claimed when the
        pass that writes it starts and freed when its beat is taken (one output in flight).
        """
        p = self.lanes
        sh = self.shapes
        ti = self.tail_interval
        top = len(sh.hidden_sizes) - 1
        neg = -(1 << 60)
        nl = len(sh.hidden_sizes)
        t_free = 0
        # per stream and layer: first cycle the layer's state is up to date
        pending_clear = [[neg] * nl for _ in range(self.streams)]
        rz_clear = [[neg] * nl for _ in range(self.streams)]
        claim_free = neg  # several streams: the output register is free from this cycle
        ser_il, ser_n = neg, 0
        accepts: list[int] = []
        outputs: list[int | None] = []
        for sid, last in beats:
            if not 0 <= sid < self.streams:
                raise GruHwError(f"stream id {sid} out of range 0..{self.streams - 1}")
            pend, rzc = pending_clear[sid], rz_clear[sid]
            writes = self.sequence or (last and sh.head_size is None)
            prog = list(self.phases[: self.step_phases])
            if last and sh.head_size is not None:
                prog.append(self.phases[self.step_phases])
            out_cycle = None
            for ph in prog:
                last_entry = None
                # several streams: the passes that claim the output register (in sequence mode
                # a last step's head output comes under its final pass's claim)
                claims = self.streams > 1 and (
                    (ph.rowset == "head" and not self.sequence)
                    or (ph.final and ph.layer == top and writes))
                for g in range(ph.groups):
                    s = t_free
                    if g == 0:
                        if ph.source == "h_below":
                            s = max(s, pend[ph.layer - 1])
                        if ph.first_h_read:
                            s = max(s, pend[ph.layer])
                        if ph.source == "rh":
                            s = max(s, rzc[ph.layer])
                        if ph.source == "h_top":
                            s = max(s, pend[top])
                        if claims:
                            s = max(s, claim_free)
                    # every group's sums leave through the shift chain, one beat (one
                    # row with tail width 1) per cycle
                    s = max(s, ser_il + ser_n - ph.cols + 1)
                    if ph.accept and g == 0:
                        accepts.append(s)
                    i_last = s + ph.cols - 1
                    t_free = s + ph.cols
                    # parked beats leave one per cycle, emitted ones one per tail interval
                    n = ph.group_beats(g, p)
                    ser_il, ser_n = i_last, n * (ti if ph.emit else 1)
                    if ph.emit:
                        last_entry = i_last + self.mac_latency + (n - 1) * ti
                if ph.rz_final:
                    rzc[ph.layer] = last_entry + self.tail_rz_latency + 1
                if ph.final and ph.layer >= 0:
                    done = last_entry + self.tail_n_latency
                    pend[ph.layer] = done + 1
                    if ph.layer == top and writes:
                        out_cycle = done + 1
                if ph.rowset == "head":
                    out_cycle = last_entry + self.tail_head_latency + 1
            if out_cycle is not None:
                claim_free = out_cycle
            outputs.append(out_cycle)
        return accepts, outputs

    def round_robin(self, steps: int, streams: int | None = None) -> list[tuple[int, bool]]:
        """The beats of ``streams`` (default: all S) sequences of ``steps`` steps sent round-robin:
        step 0 of streams 0..S-1, then step 1 of each, ...; as :meth:`run_beats` takes them."""
        n = self.streams if streams is None else streams
        return [(sid, step == steps - 1) for step in range(steps) for sid in range(n)]

    @property
    def cycles_per_round(self) -> int:
        """Steady-state cycles for one step of each of the S streams, sent round-robin (S = 1:
        :attr:`cycles_per_step`)."""
        n = self.streams
        acc, _ = self.run_beats(self.round_robin(12))
        return acc[8 * n] - acc[7 * n]  # mid-sequence (no last steps: no head, no output)

    @property
    def cycles_per_stream_step(self) -> float:
        """Steady-state cycles per time step of one stream with S streams round-robin:
        :attr:`cycles_per_round` / S (the throughput figure; each stream's own steps are
        :attr:`cycles_per_round` apart)."""
        return self.cycles_per_round / self.streams

    def cycles_per_sequence(self, steps: int) -> int:
        """Exact cycles of one sequence of ``steps`` steps sent to an idle core."""
        if not isinstance(steps, int) or steps < 1:
            raise GruHwError(f"steps must be a positive integer, got {steps!r}")
        return self.run([steps])[0]

    @property
    def cycles_per_step(self) -> int:
        """Steady-state cycles between two input beats inside a long sequence."""
        _, acc = self.run([12], trace=True)
        return acc[-1] - acc[-2]

    @property
    def latency(self) -> int:
        """Cycles from the last input beat of a long sequence accepted to its output accepted."""
        cyc, acc = self.run([12], trace=True)
        return cyc[0] - (acc[-1] - acc[0])

    @property
    def first_step_cycles(self) -> int:
        """Cycles between the first and second input beat of a sequence sent to an idle core."""
        _, acc = self.run([3], trace=True)
        return acc[1] - acc[0]

    @property
    def sequence_overhead(self) -> int:
        """``cycles_per_sequence(T) - T * cycles_per_step`` (the same for every T >= 2)."""
        return self.cycles_per_sequence(2) - 2 * self.cycles_per_step

    def summary(self) -> dict:
        """Return the schedule's figures as a JSON-ready dict."""
        return {
            "lanes": self.lanes,
            "profile": self.profile.to_json(),
            "ideal_cycles_per_step": self.ideal_cycles_per_step,
            "issue_cycles_per_step": self.issue_cycles_per_step,
            "cycles_per_step": self.cycles_per_step,
            "latency": self.latency,
            "first_step_cycles": self.first_step_cycles,
            "sequence_overhead": self.sequence_overhead,
            "cycles_per_sequence_formula": "T == 1: cycles_per_sequence_values['1']; T >= 2: "
                                           "sequence_overhead + cycles_per_step * T",
            "cycles_per_sequence_values": {str(t): self.cycles_per_sequence(t)
                                           for t in (1, 2, 3, 4, 8, 29)},
            "streams": self.streams,
            "cycles_per_round": self.cycles_per_round,
            "cycles_per_stream_step": self.cycles_per_stream_step,
            "mac_units": self.mac_units,
            "multipliers": self.multipliers,
            "dsp_multipliers": self.dsp_multipliers,
            "tail_latency": {"rz": self.tail_rz_latency, "n": self.tail_n_latency,
                             "head": self.tail_head_latency},
            "phases": [
                {"layer": ph.layer, "rows": ph.rowset, "vector": ph.source,
                 "emit": ph.emit, "groups": ph.groups, "cols": ph.cols}
                for ph in self.phases
            ],
        }
