"""GRUCore: the streaming fixed-point GRU (stack + optional dense head), bit-exact with golden.

Structure (the cycle model is :class:`gru_hw.schedule.Schedule`; this module builds exactly it):

* **Controller.** Runs the schedule's program of phases, one column per cycle. Inside a group it
  never stalls; at a group or phase start it waits for its dependencies (input beat, the state of
  a layer being up to date, the r*h vector, room in the output register, room in the shift chain).
* **MAC lanes.** Lane p has only a weight memory (one word per issued column of the program, so
  the address is a plain counter), a multiplier and an accumulator that starts from 0.
  Pipeline: cycle i issue (memory/vector addresses), i+1 weight and vector registered, i+2 product
  registered, accumulate; at a group's last column every lane's sum is loaded into the shift chain.
* **Shift chain.** P registers that move one row per cycle (emitted rows with tail_mul="seq":
  one per SEQ_STEPS cycles) out of the lanes, tagged (kind, unit, row) by counters, in the order
  r0 z0 n0 r1 ... (reset_after) or r0 z0 r1 z1 ... then n0 n1 ...
* **Chain exit (shared by all lanes).** The row's bias is added from ONE bias ROM (one word per
  row of the program); a first-pass sum is then *parked* in ONE park buffer (one word per gate
  row of a layer), a second-pass sum is sent to the tail with its parked partner read back. This
  replaces the P per-lane bias memories and accumulator buffers of an earlier version (each a
  few block RAMs per lane on iCE40, for a few dozen words) at no cycle cost: a parked group
  leaves the chain in P cycles, while the next group takes ``cols`` >= P cycles in the cases
  that matter (the controller waits otherwise, and the schedule counts it).
* **Tail.** Fixed-latency pipelines, one row per cycle: r/z rows align and add their two sums,
  requantize, sigmoid, and are written to the gate memories (reset_before: r*h is requantized to
  the rh memory). n rows (reset_after: requant hn, wait for r, r*hn, add, requant; reset_before:
  add, requant) go through tanh and the update h' = requant(n + z (h - n)), written to the other
  bank of the layer's state memory (two banks: h_{t-1} is read while h_t is written).
  Head rows are requantized into the output register.

Every requantization point uses its own rounding and overflow mode from the QuantSpec.

Target choice: ``tail_mul="dsp"`` (default; ECP5 and other parts with spare multipliers) puts the
four tail products on hard multipliers. On the iCE40 UP5K (8 SB_MAC16, all needed by 8 lanes)
use ``tail_mul="seq"``: sequential logic multipliers (a quarter of the partial products of
``"lut"`` per cycle, one product per SEQ_STEPS cycles) and memory delay lines for the long
reset_after wait for r; the tail then takes one emitted row per SEQ_STEPS cycles, which costs no
cycles while emitting groups have >= SEQ_STEPS * lanes columns (12-32-9 at 8 lanes: 548 cycles
per step instead of 528, the first park group of a step waiting for the chain).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..errors import GruHwError
from ..fixed import bits_for_int_range
from ..schedule import MAC_LATENCY, RQ_LATENCY, Schedule
from .activation import PWLUnit
from .arith import delay, delay_ram, mul_pipe, rq_pipe

__all__ = ["GRUCore"]

KIND_R, KIND_Z, KIND_N, KIND_HEAD = 0, 1, 2, 3
ROWSET_CODE = {"all": 0, "rz": 1, "n": 2, "head": 3}
SRC_CODE = {"x": 0, "h_below": 1, "h_own": 2, "rh": 3, "h_top": 4}


def _bits(n: int) -> int:
    """Unsigned width holding 0..n."""
    return max(1, int(n).bit_length())


def _sel(m: Module, index, exprs: list, name: str, signed_: bool = True) -> Signal:
    """Return a signal equal to exprs[index] (a mux over a small constant list)."""
    width = max(e.shape().width if hasattr(e, "shape") else max(1, int(e).bit_length() + 1)
                for e in exprs)
    out = Signal(signed(width + 1) if signed_ else unsigned(width), name=name)
    if len(exprs) == 1:
        m.d.comb += out.eq(exprs[0])
        return out
    with m.Switch(index):
        for i, e in enumerate(exprs):
            with m.Case(i):
                m.d.comb += out.eq(e)
    return out


class GRUCore(wiring.Component):
    """A streaming GRU inference core for one quantized model.

    Parameters: ``qm`` (QuantModel), ``lanes`` (MAC lanes P, 1..3H), ``sequence`` (emit the top
    layer's h every step), ``tail_mul`` ("dsp": tail products with ``*``; "lut": shift-and-add,
    one product per cycle; "seq": sequential shift-and-add, one product per SEQ_STEPS cycles:
    the smallest, for iCE40), ``runtime_weights`` (add the weight port ``w_stream``) and
    ``init_weights`` (with runtime_weights: start with qm's weights, else zeros).

    Ports:
      * ``i_stream`` (in): one time step per beat, payload ``{x: I x signed(x_fmt.width), first,
        last}``. ``first`` restarts every layer from h = 0; ``last`` ends a sequence.
      * ``o_stream`` (out): payload ``{y: O_y x signed(out_width), [y_head], last}``.
        sequence=False: one beat per sequence after its last step; y is the head output
        (out_fmt) or, without a head, the top layer's h (h_fmt); last = 1.
        sequence=True: one beat per step, y = the top layer's h (h_fmt), last copied from the
        input beat; with a head, ``y_head`` (O x out_fmt) carries the head output, valid on the
        beats with last = 1 (zero or stale otherwise).
      * ``w_stream`` (in; only with ``runtime_weights``): weight words, payload ``{addr:
        unsigned(w_addr_width), data: signed(w_data_width), last}``. Region ``s`` of the address
        map (lane ``s``'s weight memory for s < P, the bias memory for s = P) starts at
        ``s << w_offset_bits``; :meth:`weight_regions` gives a model's words. A load is a packet
        ending with ``last``; each word is written in the cycle it is taken. ``ready`` is low
        while a sequence is in flight (first input beat taken .. last output beat taken); a
        packet offered between sequences holds the next input beat back until its last word,
        so no sequence sees half-written weights. Reset does not clear the memories. The
        memories start with ``qm``'s weights (zeros with ``init_weights=False``); accumulators
        are sized for any weights the formats can hold.
      All streams follow the Amaranth stream rules (valid never waits for ready).

    Latency and throughput: see :attr:`schedule` (cycles_per_step, cycles_per_sequence(T),
    latency), exact when the input is always valid and the output always ready.
    """

    def __init__(self, qm, lanes: int, *, sequence: bool = False, tail_mul: str = "dsp",
                 runtime_weights: bool = False, init_weights: bool = True) -> None:
        self.qm = qm
        self.runtime_weights = bool(runtime_weights)
        self.init_weights = bool(init_weights) or not self.runtime_weights
        self.spec = qm.spec
        self.sequence = bool(sequence)
        try:
            self.schedule = Schedule(qm, lanes, tail_mul=tail_mul)
        except GruHwError:
            self._MustUse__silence = True  # a rejected core is not an unused one
            raise
        self.lanes = lanes
        self.tail_mul = tail_mul
        spec = self.spec
        self.input_size = qm.input_size
        self.hidden_sizes = list(qm.hidden_sizes)
        self.has_head = qm.head_w is not None
        self.x_width = spec.x_fmt.width
        if self.sequence:
            self.out_width = spec.h_fmt.width
            self.y_size = self.hidden_sizes[-1]
        else:
            self.out_width = spec.out_fmt.width
            self.y_size = qm.output_size
        fields = {"y": data.ArrayLayout(signed(self.out_width), self.y_size)}
        if self.sequence and self.has_head:
            fields["y_head"] = data.ArrayLayout(signed(spec.out_fmt.width), qm.output_size)
        fields["last"] = unsigned(1)
        self.i_layout = data.StructLayout({
            "x": data.ArrayLayout(signed(self.x_width), self.input_size),
            "first": unsigned(1), "last": unsigned(1)})
        self.o_layout = data.StructLayout(fields)
        self._build_tables()
        ports = {
            "i_stream": In(stream.Signature(self.i_layout)),
            "o_stream": Out(stream.Signature(self.o_layout)),
        }
        if self.runtime_weights:
            self.w_layout = data.StructLayout({
                "addr": unsigned(self.w_addr_width), "data": signed(self.w_data_width),
                "last": unsigned(1)})
            ports["w_stream"] = In(stream.Signature(self.w_layout))
        super().__init__(ports)

    # ---- figures used by tests and tools -------------------------------------------------------
    @property
    def cycles_per_step(self) -> int:
        """Steady-state cycles per time step (input always valid, output always ready)."""
        return self.schedule.cycles_per_step

    @property
    def latency(self) -> int:
        """Cycles from a sequence's last input beat accepted to its output beat accepted."""
        return self.schedule.latency

    def cycles_per_sequence(self, steps: int) -> int:
        """Exact cycles of one sequence of ``steps`` steps sent to an idle core."""
        return self.schedule.cycles_per_sequence(steps)

    # ---- memory contents -----------------------------------------------------------------------
    def _phase_matrix(self, ph, qm):
        """Return (weights (rows, cols), bias (rows,), vector (lo, hi)) of a phase, rows in order."""
        spec = self.spec
        if ph.rowset == "head":
            h = spec.h_fmt
            return qm.head_w, qm.head_b, (h.min_int, h.max_int)
        q = qm.layers[ph.layer]
        hk = self.hidden_sizes[ph.layer]
        if ph.rowset == "all":
            order = [kind * hk + j for j in range(hk) for kind in range(3)]
        elif ph.rowset == "rz":
            order = [kind * hk + j for j in range(hk) for kind in range(2)]
        else:
            order = [2 * hk + j for j in range(hk)]
        if ph.x_like:
            w, b = q.w_ih[order], q.b_ih[order]
            f = spec.in_fmt(ph.layer)
        else:
            w, b = q.w_hh[order], q.b_hh[order]
            f = spec.h_fmt
        return w, b, (f.min_int, f.max_int)

    def _tables(self, qm):
        """Return (per-lane weight words, bias rows, accumulator (lo, hi), weight bits) of ``qm``."""
        sch = self.schedule
        p = self.lanes
        wdata = [[0] * max(sch.weight_depth, 1) for _ in range(p)]
        brows = [0] * sch.bias_rows
        lo_all, hi_all = 0, 0
        wmax = 1
        for ph in sch.phases:
            w, b, (vlo, vhi) = self._phase_matrix(ph, qm)
            w = np.asarray(w, dtype=np.int64)
            b = np.asarray(b, dtype=np.int64)
            pos = np.where(w > 0, w * vhi, w * vlo).sum(axis=1) + b
            neg = np.where(w > 0, w * vlo, w * vhi).sum(axis=1) + b
            lo_all = min(lo_all, int(neg.min()), int(b.min()))
            hi_all = max(hi_all, int(pos.max()), int(b.max()))
            wmax = max(wmax, bits_for_int_range(int(w.min()), int(w.max())))
            brows[ph.brow:ph.brow + ph.rows] = [int(v) for v in b]
            for g in range(ph.groups):
                for lane in range(p):
                    row = g * p + lane
                    if row >= ph.rows:
                        continue
                    base = ph.waddr + g * ph.cols
                    for c in range(ph.cols):
                        wdata[lane][base + c] = int(w[row, c])
        return wdata, brows, (lo_all, hi_all), wmax

    def _format_bounds(self):
        """Return (accumulator (lo, hi), weight bits, bias bits) over every model of the formats."""
        spec = self.spec
        bound = 0
        wbits, bbits = 1, 2
        for ph in self.schedule.phases:
            if ph.rowset == "head":
                wf, bf, vf = spec.head.w_fmt, spec.head_b_fmt(), spec.h_fmt
            else:
                lf = spec.layers[ph.layer]
                if ph.x_like:
                    wf, bf, vf = lf.w_ih_fmt, spec.b_ih_fmt(ph.layer), spec.in_fmt(ph.layer)
                else:
                    wf, bf, vf = lf.w_hh_fmt, spec.b_hh_fmt(ph.layer), spec.h_fmt
            # the largest |w * v| is min_int * min_int; the largest |b| is -min_int
            bound = max(bound, ph.cols * wf.min_int * vf.min_int - bf.min_int)
            wbits, bbits = max(wbits, wf.width), max(bbits, bf.width)
        return (-bound, bound), wbits, bbits

    def _build_tables(self) -> None:
        wdata, brows, (lo_all, hi_all), wmax = self._tables(self.qm)
        self._wdata, self._brows = wdata, brows
        vbits = max(self.spec.x_fmt.width, self.spec.h_fmt.width)
        if self.runtime_weights:
            # sized for any weights the formats can hold, not just this model's
            (lo_all, hi_all), wmax, bbits = self._format_bounds()
        else:
            bbits = max(bits_for_int_range(min(brows), max(brows)), 2)
        self.weight_width = max(wmax, max(lf.w_ih_fmt.width for lf in self.spec.layers))
        self.vector_width = vbits
        prod = self.weight_width + vbits
        self.acc_width = max(bits_for_int_range(lo_all, hi_all), prod) + 1
        self.bias_width = bbits
        # the weight port's address map: region s (lanes 0..P-1, then the biases as region P)
        # starts at s << w_offset_bits
        self.w_depth = len(wdata[0])
        self.w_offset_bits = max(1, (max(self.w_depth, len(brows)) - 1).bit_length())
        self.w_addr_width = self.w_offset_bits + max(1, self.lanes.bit_length())
        self.w_data_width = max(self.weight_width, self.bias_width)

    # ---- run-time weights ------------------------------------------------------------------------
    @classmethod
    def weight_map(cls, qm, lanes: int, **kwargs) -> "GRUCore":
        """Return a runtime-weights core only for its weight map (never elaborated: no warning)."""
        core = cls(qm, lanes, runtime_weights=True, **kwargs)
        core._MustUse__silence = True
        return core

    def weight_regions(self, qm=None) -> list[tuple[int, list[int]]]:
        """Return the words of ``qm`` (default: the core's model) for the weight port, by region.

        One ``(base address, words)`` per region, in order: lane 0's weight memory, ..., lane
        P-1's, then the bias memory. Word ``i`` of a region goes to address ``base + i``. ``qm``
        must have the core's shape and QuantSpec (formats and modes): the hardware was sized for
        those, and the golden model of ``qm`` is then what the core computes once loaded.
        """
        if qm is None or qm is self.qm:
            wdata, brows = self._wdata, self._brows  # built with the core
        else:
            self.check_compatible(qm)
            wdata, brows, _, _ = self._tables(qm)
        step = 1 << self.w_offset_bits
        return [(lane * step, list(words)) for lane, words in enumerate(wdata)] + \
            [(self.lanes * step, list(brows))]

    def weight_image(self, qm=None) -> list[tuple[int, int]]:
        """Return every ``(address, word)`` of ``qm`` for the weight port, in region order."""
        return [(base + i, w) for base, words in self.weight_regions(qm)
                for i, w in enumerate(words)]

    def check_compatible(self, qm) -> None:
        """Raise GruHwError unless ``qm`` has this core's shape, variant and QuantSpec."""
        from ..schedule import Shapes

        a, b = Shapes.of(qm), Shapes.of(self.qm)
        if a != b:
            raise GruHwError(
                f"the model ({a.input_size} inputs, hidden {list(a.hidden_sizes)}, head "
                f"{a.head_size}, {'reset_after' if a.reset_after else 'reset_before'}) does not "
                f"have the core's shape ({b.input_size} inputs, hidden {list(b.hidden_sizes)}, "
                f"head {b.head_size}, {'reset_after' if b.reset_after else 'reset_before'})")
        if qm.spec.to_json() != self.spec.to_json():
            raise GruHwError("the model is quantized with other formats than the core's: "
                             "quantize it with the core's QuantSpec (--qconfig spec.json)")

    # ---- the hardware --------------------------------------------------------------------------
    def elaborate(self, platform):  # noqa: C901 (one flat datapath reads best top to bottom)
        m = Module()
        sch = self.schedule
        spec = self.spec
        P = self.lanes
        phases = sch.phases
        nph = len(phases)
        hs = self.hidden_sizes
        nl = len(hs)
        top = nl - 1
        ml = sch.mul_latency
        tm = self.tail_mul
        reset_after = self.qm.reset_after
        has_head = self.has_head
        O = self.qm.output_size
        vw = self.vector_width
        aw = self.acc_width
        fg = spec.gate_fmt.frac_bits
        fhh = spec.h_fmt.frac_bits

        # state memory: per layer two banks of H words; bank b of layer k at sbase[k] + b*H
        sbase = [2 * sum(hs[:k]) for k in range(nl)]
        gbase = [sum(hs[:k]) for k in range(nl)]  # per-layer offset in gate / rh memories
        state = Memory(shape=signed(spec.h_fmt.width), depth=2 * sum(hs), init=[])
        m.submodules.state = state
        st_w = state.write_port()
        st_vec = state.read_port()        # matvec vector
        st_tail = state.read_port()       # tail: h_j for the update
        st_rh = state.read_port() if not reset_after else None  # tail: h_j for r*h
        zmem = Memory(shape=signed(spec.gate_fmt.width), depth=sum(hs), init=[])
        m.submodules.zmem = zmem
        z_w, z_r = zmem.write_port(), zmem.read_port()
        if reset_after:
            rmem = Memory(shape=signed(spec.gate_fmt.width), depth=sum(hs), init=[])
            m.submodules.rmem = rmem
            r_w, r_r = rmem.write_port(), rmem.read_port()
        else:
            rhmem = Memory(shape=signed(spec.h_fmt.width), depth=sum(hs), init=[])
            m.submodules.rhmem = rhmem
            rh_w, rh_vec = rhmem.write_port(), rhmem.read_port()

        # ---- layer status -------------------------------------------------------------------
        pending = Signal(nl, name="pending")       # a pass over the layer's state is in flight
        rz_pending = Signal(nl, name="rz_pending")  # reset_before: r*h / z of this step in flight
        cur = Signal(nl, name="cur")               # bank holding the layer's current h
        zero_pending = Signal(nl, name="zero_pending")
        zero_cur = Signal(nl, name="zero_cur")     # this step of the layer starts from h = 0
        cur_last = Signal(name="cur_last")
        top_oen = Signal(name="top_oen")
        top_last = Signal(name="top_last")
        o_valid = Signal(name="o_valid")
        o_last = Signal(name="o_last")
        y_regs = [Signal(signed(self.out_width), name=f"y{i}") for i in range(self.y_size)]
        yh_regs = ([Signal(signed(spec.out_fmt.width), name=f"yh{i}") for i in range(O)]
                   if self.sequence and has_head else [])

        # ---- controller ---------------------------------------------------------------------
        max_cols = max(p.cols for p in phases)
        max_groups = max(p.groups for p in phases)
        ph = Signal(range(nph), name="ph")
        g = Signal(range(max_groups + 1), name="g")
        c = Signal(range(max_cols + 1), name="c")
        waddr = Signal(range(max(sch.weight_depth, 2)), name="waddr")
        TI = sch.tail_interval
        ser_hold = Signal(range(P * TI + 2), name="ser_hold")

        k_cols = Signal(range(max_cols + 1), name="k_cols")
        k_groups = Signal(range(max_groups + 1), name="k_groups")
        k_last_rows = Signal(range(P + 1), name="k_last_rows")
        k_emit = Signal(name="k_emit")
        k_xlike = Signal(name="k_xlike")
        k_src = Signal(range(len(SRC_CODE)), name="k_src")
        k_rowset = Signal(range(4), name="k_rowset")
        k_layer = Signal(range(max(nl, 2)), name="k_layer")
        k_ok = Signal(name="k_ok")  # the phase's start conditions hold
        vec_addr = Signal(range(max(2 * sum(hs), 2)), name="vec_addr")
        vec_zero = Signal(name="vec_zero")
        rh_addr = Signal(range(max(sum(hs), 2)), name="rh_addr")
        i_ready = self.i_stream.ready
        o_free = ~o_valid | self.o_stream.ready
        writes_out = (Const(1) if self.sequence else (cur_last & Const(int(not has_head))))

        # c == 0, g == 0, ph == 0 kept as registered flags (updated with c, g, ph), and the
        # phase's last column / group as constants of the phase table: the controller's go
        # decision fans out to the whole issue pipeline.
        c_zero = Signal(init=1, name="c_zero")
        g_zero = Signal(init=1, name="g_zero")
        ph_zero = Signal(init=1, name="ph_zero")
        k_lastc = Signal(range(max_cols + 1), name="k_lastc")
        k_lastg = Signal(range(max_groups + 1), name="k_lastg")
        at_phase_start = c_zero & g_zero
        w_block = Signal(name="w_block")  # a weight packet is offered, under way or being written
        with m.Switch(ph):
            for i, p_ in enumerate(phases):
                with m.Case(i):
                    m.d.comb += [
                        k_cols.eq(p_.cols), k_groups.eq(p_.groups),
                        k_lastc.eq(p_.cols - 1), k_lastg.eq(p_.groups - 1),
                        k_last_rows.eq(p_.rows - (p_.groups - 1) * P),
                        k_emit.eq(p_.emit), k_xlike.eq(p_.x_like), k_src.eq(SRC_CODE[p_.source]),
                        k_rowset.eq(ROWSET_CODE[p_.rowset]), k_layer.eq(max(p_.layer, 0)),
                    ]
                    ok = Const(1)
                    if p_.accept:
                        ok = ok & self.i_stream.valid & ~w_block
                    if p_.source == "h_below":
                        ok = ok & ~pending[p_.layer - 1]
                    if p_.first_h_read:
                        ok = ok & ~pending[p_.layer]
                    if p_.source == "rh":
                        ok = ok & ~rz_pending[p_.layer]
                    if p_.rowset == "head":
                        ok = ok & ~pending[top] & o_free
                    if p_.final and p_.layer == top:
                        ok = ok & (~writes_out | o_free)
                    m.d.comb += k_ok.eq(ok)
                    # vector addresses
                    if p_.source in ("h_below", "h_own", "h_top"):
                        lk = {"h_below": p_.layer - 1, "h_own": p_.layer, "h_top": top}[p_.source]
                        m.d.comb += vec_addr.eq(sbase[lk] + Mux(cur[lk], hs[lk], 0) + c)
                    if p_.source == "h_own":
                        m.d.comb += vec_zero.eq(Mux(at_phase_start & Const(int(p_.first_h_read)),
                                                    zero_pending[p_.layer], zero_cur[p_.layer]))
                    if p_.source == "rh":
                        m.d.comb += rh_addr.eq(gbase[p_.layer] + c)

        group_ok = ser_hold <= k_cols
        go = Signal(name="go")
        m.d.comb += go.eq(Mux(~c_zero, 1, group_ok & Mux(g_zero, k_ok, 1)))
        # ---- weight port (run-time weights) ------------------------------------------------------
        # A load is a packet of weight beats ending with ``last``. A sequence is in flight from its
        # first beat accepted until its last output beat is taken; weight beats wait meanwhile
        # (ready low). Between sequences, an offered weight beat holds the next sequence back
        # until the whole packet is written, so no sequence ever sees a half-written model and
        # a steady input stream cannot starve the loader.
        if self.runtime_weights:
            ws = self.w_stream
            seq_open = Signal(name="seq_open")          # a sequence's beats are arriving
            in_flight = Signal(range(8), name="in_flight")  # sequences sent, output not yet taken
            loading = Signal(name="loading")            # a packet's first beats are written
            # a beat is written in the cycle it is taken (the memories' write ports take the
            # port's address and data as they are)
            w_v = ws.valid & ws.ready
            w_off = ws.payload.addr[:self.w_offset_bits]
            w_sel = ws.payload.addr[self.w_offset_bits:]
            w_dat = ws.payload.data
            m.d.comb += ws.ready.eq(~seq_open & (in_flight == 0))
            with m.If(w_v):
                m.d.sync += loading.eq(~ws.payload.last)
            m.d.comb += w_block.eq((ws.valid & ~seq_open) | loading)
        m.d.comb += i_ready.eq(ph_zero & at_phase_start & group_ok & ~w_block)
        accept = go & ph_zero & at_phase_start
        if self.runtime_weights:
            o_done = self.o_stream.valid & self.o_stream.ready & self.o_stream.payload.last
            with m.If(accept):
                m.d.sync += seq_open.eq(~self.i_stream.payload.last)
            m.d.sync += in_flight.eq(in_flight + (accept & self.i_stream.payload.last) - o_done)
        last_col = c == k_lastc
        last_group = g == k_lastg
        n_rows = Mux(last_group, k_last_rows, P)

        with m.If(go):
            m.d.sync += c_zero.eq(last_col)
            with m.If(last_col):
                m.d.sync += g_zero.eq(last_group)
            with m.If(~last_col):
                m.d.sync += c.eq(c + 1)
            with m.Else():
                m.d.sync += c.eq(0)
                with m.If(~last_group):
                    m.d.sync += g.eq(g + 1)
                with m.Else():
                    m.d.sync += g.eq(0)
            step_end = last_col & last_group & (
                (ph == nph - 1) | ((ph == sch.step_phases - 1) & ~(cur_last & Const(int(has_head)))))
            with m.If(last_col & last_group):
                m.d.sync += [ph.eq(Mux(step_end, 0, ph + 1)), ph_zero.eq(step_end)]
            m.d.sync += waddr.eq(Mux(step_end, 0, waddr + 1))

        # serializer hold counter
        with m.If(go & last_col):
            m.d.sync += ser_hold.eq(Mux(k_emit, n_rows * TI, n_rows))
        with m.Elif(ser_hold != 0):
            m.d.sync += ser_hold.eq(ser_hold - 1)

        # ---- input register ------------------------------------------------------------------
        x_regs = [Signal(signed(self.x_width), name=f"x{i}") for i in range(self.input_size)]
        payload = self.i_stream.payload
        with m.If(accept):
            m.d.sync += [x_regs[i].eq(payload.x[i]) for i in range(self.input_size)]
            m.d.sync += cur_last.eq(payload.last)

        # ---- issue pipeline: cycle i (issue) -> i+1 (operands) -> i+2 (operands registered)
        # -> i+3 (product, accumulate) --
        m.d.comb += [st_vec.addr.eq(vec_addr)]
        if not reset_after:
            m.d.comb += rh_vec.addr.eq(rh_addr)
        x_arr = Array(x_regs)
        vx = Signal(signed(self.x_width), name="vx")
        m.d.sync += vx.eq(Mux(accept, payload.x[0], x_arr[c]))

        v1 = Signal(name="issue1")
        first1, last1, emit1, xlike1, zero1 = (Signal(name=n) for n in
                                               ("first1", "last1", "emit1", "xlike1", "zero1"))
        src1 = Signal.like(k_src, name="src1")
        ph1 = Signal.like(ph, name="ph1")
        layer1 = Signal.like(k_layer, name="layer1")
        rowset1 = Signal.like(k_rowset, name="rowset1")
        nrows1 = Signal(range(P + 1), name="nrows1")
        fgroup1 = Signal(name="fgroup1")
        m.d.sync += [
            v1.eq(go), first1.eq(c_zero), last1.eq(last_col), emit1.eq(k_emit),
            xlike1.eq(k_xlike), zero1.eq(vec_zero & (k_src == SRC_CODE["h_own"])), src1.eq(k_src),
            ph1.eq(ph), layer1.eq(k_layer), rowset1.eq(k_rowset),
            nrows1.eq(n_rows), fgroup1.eq(g_zero),
        ]
        vec_c = Signal(signed(vw), name="vec_c")
        with m.Switch(src1):
            with m.Case(SRC_CODE["x"]):
                m.d.comb += vec_c.eq(vx)
            with m.Case(SRC_CODE["rh"]):
                if not reset_after:
                    m.d.comb += vec_c.eq(rh_vec.data)
            with m.Default():
                m.d.comb += vec_c.eq(Mux(zero1, 0, st_vec.data))
        # The weight word and the vector element are registered once more before the
        # multipliers (block RAM output -> hard multiplier was the ECP5 critical path): the
        # issue pipeline gets one more stage (MAC_LATENCY).
        vec = Signal(signed(vw), name="vec", reset_less=True)
        m.d.sync += vec.eq(vec_c)
        v1, first1, last1, emit1, xlike1, ph1, layer1, rowset1, nrows1, fgroup1 = (
            delay(m, sig, 1, f"{sig.name}_q") for sig in
            (v1, first1, last1, emit1, xlike1, ph1, layer1, rowset1, nrows1, fgroup1))

        v2 = Signal(name="issue2")
        first2, last2, emit2, xlike2 = (Signal(name=n) for n in ("first2", "last2", "emit2", "xlike2"))
        ph2 = Signal.like(ph, name="ph2")
        layer2 = Signal.like(k_layer, name="layer2")
        rowset2 = Signal.like(k_rowset, name="rowset2")
        nrows2 = Signal.like(nrows1, name="nrows2")
        fgroup2 = Signal(name="fgroup2")
        m.d.sync += [v2.eq(v1), first2.eq(first1), last2.eq(last1), emit2.eq(emit1),
                     xlike2.eq(xlike1), ph2.eq(ph1), layer2.eq(layer1), rowset2.eq(rowset1),
                     nrows2.eq(nrows1), fgroup2.eq(fgroup1)]
        load = v2 & last2  # every group's sums enter the shift chain (parked or emitted)

        # ---- MAC lanes: weight memory, multiplier, accumulator; nothing else per lane ------------
        lane_res = []
        for lane in range(P):
            wmem = Memory(shape=signed(self.weight_width), depth=len(self._wdata[lane]),
                          init=self._wdata[lane] if self.init_weights else [])
            m.submodules[f"wmem{lane}"] = wmem
            wr = wmem.read_port()
            if self.runtime_weights:
                ww = wmem.write_port()
                m.d.comb += [ww.addr.eq(w_off), ww.data.eq(w_dat),
                             ww.en.eq(w_v & (w_sel == lane))]
            m.d.comb += wr.addr.eq(waddr)
            w_q = Signal(signed(self.weight_width), name=f"wq{lane}", reset_less=True)
            m.d.sync += w_q.eq(wr.data)
            # iCE40 ("seq" core): a product register without reset lets Yosys (ice40_dsp) put
            # it, w_q and vec into the SB_MAC16's own registers and the accumulator's adder
            # into its adder (iCEBreaker 12-32-9 8 lanes 8/8: 5059 -> 4713 LC, 200 FF and 152
            # carry cells fewer). Safe: prod is only used under v2. The "dsp" core keeps its
            # reset (its ECP5 builds were measured that way).
            prod = Signal(signed(self.weight_width + vw), name=f"prod{lane}",
                          reset_less=(tm == "seq"))
            m.d.sync += prod.eq(w_q * vec)
            acc = Signal(signed(aw), name=f"acc{lane}")
            acc_next = Signal(signed(aw), name=f"accn{lane}")
            m.d.comb += acc_next.eq(Mux(first2, 0, acc) + prod)
            with m.If(v2):
                m.d.sync += acc.eq(acc_next)
            lane_res.append(acc_next)

        # ---- shift chain: every group's P sums (parked or emitted) leave one per cycle ----------
        ch = [Signal(signed(aw), name=f"ch{i}") for i in range(P)]
        cnt = Signal(range(P + 1), name="ch_cnt")
        s_ph = Signal.like(ph, name="s_ph")
        s_layer = Signal.like(k_layer, name="s_layer")
        s_rowset = Signal.like(k_rowset, name="s_rowset")
        kind = Signal(2, name="kind")
        tj = Signal(range(max(max(hs), O) + 1), name="tj")
        erow = Signal(range(max(max(3 * h for h in hs), O) + 1), name="erow")
        # emitted rows leave every TI cycles (counted from the load), parked rows every cycle
        tick = Signal(range(max(TI, 2)), name="ch_tick")
        e_emit = Signal(name="e_emit")
        out_now = (cnt != 0) & (~e_emit | (tick == 0))
        if TI > 1:
            with m.If(load | (tick == TI - 1)):
                m.d.sync += tick.eq(0)
            with m.Else():
                m.d.sync += tick.eq(tick + 1)
        with m.If(load):
            m.d.sync += [ch[i].eq(lane_res[i]) for i in range(P)]
            m.d.sync += [cnt.eq(nrows2), s_layer.eq(layer2), s_rowset.eq(rowset2), s_ph.eq(ph2)]
        with m.Elif(out_now):
            m.d.sync += [ch[i].eq(ch[i + 1]) for i in range(P - 1)]
            m.d.sync += cnt.eq(cnt - 1)
        with m.If(load & fgroup2):
            m.d.sync += [tj.eq(0), erow.eq(0)]
            with m.Switch(rowset2):
                with m.Case(ROWSET_CODE["n"]):
                    m.d.sync += kind.eq(KIND_N)
                with m.Case(ROWSET_CODE["head"]):
                    m.d.sync += kind.eq(KIND_HEAD)
                with m.Default():
                    m.d.sync += kind.eq(KIND_R)
        with m.Elif(out_now):
            m.d.sync += erow.eq(erow + 1)
            with m.Switch(s_rowset):
                with m.Case(ROWSET_CODE["all"]):
                    m.d.sync += kind.eq(Mux(kind == KIND_N, KIND_R, kind + 1))
                    with m.If(kind == KIND_N):
                        m.d.sync += tj.eq(tj + 1)
                with m.Case(ROWSET_CODE["rz"]):
                    m.d.sync += kind.eq(Mux(kind == KIND_Z, KIND_R, KIND_Z))
                    with m.If(kind == KIND_Z):
                        m.d.sync += tj.eq(tj + 1)
                with m.Default():
                    m.d.sync += tj.eq(tj + 1)

        # ---- chain exit (cycle e): shared bias ROM and parked-sum buffer -----------------------
        # The bias of a row is added once, as the row leaves the chain (the accumulators start at
        # 0): one shared ROM of one word per row of the program replaces P per-lane bias memories.
        # Parked sums (the first of a gate row's two passes) go to ONE shared buffer of one word
        # per gate row (the chain serializes them), instead of P per-lane buffers.
        # e: addresses; e+1: bias word, sum registered; e+2: buffer word read; e+3: tail input.
        e_xlike = Signal(name="e_xlike")
        e_bbase = Signal(range(max(sch.bias_rows, 2)), name="e_bbase")
        e_ubase = Signal(range(max(sch.buffer_rows, 2)), name="e_ubase")
        with m.Switch(s_ph):
            for i, p_ in enumerate(phases):
                with m.Case(i):
                    m.d.comb += [e_emit.eq(p_.emit), e_xlike.eq(p_.x_like),
                                 e_bbase.eq(p_.brow), e_ubase.eq(p_.urow)]
        bmem = Memory(shape=signed(self.bias_width), depth=max(len(self._brows), 2),
                      init=self._brows if self.init_weights else [])
        m.submodules.bias = bmem
        b_r = bmem.read_port()
        if self.runtime_weights:
            bw_ = bmem.write_port()
            m.d.comb += [bw_.addr.eq(w_off), bw_.data.eq(w_dat), bw_.en.eq(w_v & (w_sel == P))]
        m.d.comb += b_r.addr.eq(e_bbase + erow)
        ubuf = Memory(shape=signed(aw), depth=max(sch.buffer_rows, 2), init=[])
        m.submodules.park = ubuf
        u_w = ubuf.write_port()
        u_r = ubuf.read_port(transparent_for=(u_w,))  # a park and its emit may be 1 cycle apart
        x1_v, x1_emit, x1_xlike = (Signal(name=n) for n in ("x1_v", "x1_emit", "x1_xlike"))
        x1_ch = Signal(signed(aw), name="x1_ch")
        x1_u = Signal.like(e_ubase, name="x1_u")
        x1_layer = Signal.like(s_layer, name="x1_layer")
        x1_kind = Signal.like(kind, name="x1_kind")
        x1_j = Signal.like(tj, name="x1_j")
        m.d.sync += [x1_v.eq(out_now), x1_emit.eq(e_emit), x1_xlike.eq(e_xlike), x1_ch.eq(ch[0]),
                     x1_u.eq(e_ubase + erow), x1_layer.eq(s_layer), x1_kind.eq(kind),
                     x1_j.eq(tj)]
        m.d.comb += u_r.addr.eq(x1_u)
        x2_val = Signal(signed(aw), name="x2_val")
        x2_v, x2_emit, x2_xlike = (Signal(name=n) for n in ("x2_v", "x2_emit", "x2_xlike"))
        x2_u = Signal.like(x1_u, name="x2_u")
        x2_layer = Signal.like(s_layer, name="x2_layer")
        x2_kind = Signal.like(kind, name="x2_kind")
        x2_j = Signal.like(tj, name="x2_j")
        m.d.sync += [x2_val.eq(x1_ch + b_r.data), x2_v.eq(x1_v), x2_emit.eq(x1_emit),
                     x2_xlike.eq(x1_xlike), x2_u.eq(x1_u), x2_layer.eq(x1_layer),
                     x2_kind.eq(x1_kind), x2_j.eq(x1_j)]
        m.d.comb += [u_w.addr.eq(x2_u), u_w.data.eq(x2_val), u_w.en.eq(x2_v & ~x2_emit)]
        # e+3: the parked word (block RAM output) and the new sum are registered, paired, before
        # the tail's first adder (the RAM read straight into the rounding adder was the ECP5
        # critical path). Writes stay at e+2, so the transparent read still sees a park made
        # one cycle before its emit. The "seq" core (iCE40, where this path is not critical)
        # leaves the register out: the pair enters the tail at e+2 (Schedule.mac_latency).
        t_ax_c = Mux(x2_xlike, x2_val, u_r.data)
        t_ah_c = Mux(x2_xlike, u_r.data, x2_val)
        if sch.park_read_reg:
            t_ax_s = Signal(signed(aw), name="t_ax")
            t_ah_s = Signal(signed(aw), name="t_ah")
            m.d.sync += [t_ax_s.eq(t_ax_c), t_ah_s.eq(t_ah_c)]
            x3_v, x3_emit = (Signal(name=n) for n in ("x3_v", "x3_emit"))
            x3_layer = Signal.like(s_layer, name="x3_layer")
            x3_kind = Signal.like(kind, name="x3_kind")
            x3_j = Signal.like(tj, name="x3_j")
            m.d.sync += [x3_v.eq(x2_v), x3_emit.eq(x2_emit), x3_layer.eq(x2_layer),
                         x3_kind.eq(x2_kind), x3_j.eq(x2_j)]
        else:
            t_ax_s = Signal(signed(aw), name="t_ax")
            t_ah_s = Signal(signed(aw), name="t_ah")
            m.d.comb += [t_ax_s.eq(t_ax_c), t_ah_s.eq(t_ah_c)]
            x3_v, x3_emit, x3_layer, x3_kind, x3_j = x2_v, x2_emit, x2_layer, x2_kind, x2_j
        assert sch.mac_latency == MAC_LATENCY - (0 if sch.park_read_reg else 1)

        # ---- the tail ------------------------------------------------------------------------
        t_v = Signal(name="t_v")
        m.d.comb += t_v.eq(x3_v & x3_emit)
        t_ax, t_ah, t_layer, t_kind, t_j = t_ax_s, t_ah_s, x3_layer, x3_kind, x3_j

        def at(sig, n, name):
            return delay(m, sig, n, name)

        def layer_const(vals, name):
            return _sel(m, t_layer_at(0), vals, name)

        def t_layer_at(n):
            return at(t_layer, n, "t_layer") if n else t_layer

        def per_layer(layer_sig, vals, name, signed_=False):
            return _sel(m, layer_sig, [Const(v) for v in vals], name, signed_)

        def modes(point):
            return [spec.mode(f"l{k}.{point}") for k in range(nl)]

        def rq_layers(v, fracs, fmt_of, point, layer_sig_after, name):
            """Requantize ``v`` per layer (own frac / format / mode), select by the layer."""
            outs = []
            for k in range(nl):
                md = spec.mode(f"l{k}.{point}")
                outs.append(rq_pipe(m, v, fracs[k], fmt_of(k), md.rounding, md.overflow,
                                    f"{name}{k}"))
            if nl == 1:
                return outs[0]
            res = Signal(signed(max(o.shape().width for o in outs)), name=f"{name}_sel")
            with m.Switch(layer_sig_after):
                for k in range(nl):
                    with m.Case(k):
                        m.d.comb += res.eq(outs[k])
            return res

        fx = [spec.acc_x_frac(k) for k in range(nl)]
        fh = [spec.acc_h_frac(k) for k in range(nl)]

        def align_sum(layer_sig, a, fa, b, fb, name):
            """Register sum_k (a << (f - fa_k)) + (b << (f - fb_k)) with f = max; return (sig, f)."""
            fm = [max(fa[k], fb[k]) for k in range(nl)]
            exprs = [(a << (fm[k] - fa[k])) + (b << (fm[k] - fb[k])) for k in range(nl)]
            width = max(e.shape().width for e in exprs)
            s = Signal(signed(width), name=name)
            if nl == 1:
                m.d.sync += s.eq(exprs[0])
            else:
                with m.Switch(layer_sig):
                    for k in range(nl):
                        with m.Case(k):
                            m.d.sync += s.eq(exprs[k])
            return s, fm

        # r / z rows: sum, requantize (point r or z), sigmoid
        s_rz, f_rz = align_sum(t_layer, t_ax, fx, t_ah, fh, "s_rz")
        kind1 = at(t_kind, 1, "kind")
        layer3 = t_layer_at(RQ_LATENCY + 1)
        kind3 = at(kind1, RQ_LATENCY, "kind1")
        pre_r = rq_layers(s_rz, f_rz, lambda k: spec.preact_fmt, "r", layer3, "rq_r")
        pre_z = rq_layers(s_rz, f_rz, lambda k: spec.preact_fmt, "z", layer3, "rq_z")
        pre_g = Signal(signed(spec.preact_fmt.width), name="pre_g")
        m.d.comb += pre_g.eq(Mux(kind3 == KIND_Z, pre_z, pre_r))
        m.submodules.sigmoid = sig = PWLUnit(spec.sigmoid_table(), tm)
        m.d.comb += [sig.i.eq(pre_g), sig.v.eq(at(t_v, 1 + RQ_LATENCY, "v_sig"))]
        g_stage = 1 + RQ_LATENCY + sig.latency  # gate value valid at e + g_stage
        gate = sig.o
        L_rz = sch.tail_rz_latency
        v_w = at(t_v, L_rz, "v_rz")
        kind_w = at(t_kind, L_rz, "kind_rz")
        j_w = at(t_j, L_rz, "j_rz")
        layer_w = t_layer_at(L_rz)
        gaddr_w = Signal(range(max(sum(hs), 2)), name="gaddr_w")
        m.d.comb += gaddr_w.eq(per_layer(layer_w, gbase, "gbase_w") + j_w)
        if reset_after:
            assert g_stage == L_rz
            m.d.comb += [r_w.addr.eq(gaddr_w), r_w.data.eq(gate),
                         r_w.en.eq(v_w & (kind_w == KIND_R)),
                         z_w.addr.eq(gaddr_w), z_w.data.eq(gate),
                         z_w.en.eq(v_w & (kind_w == KIND_Z))]
        else:
            # r*h: read h_j one cycle before the gate comes out
            j_r = at(t_j, g_stage - 1, "j_hr")
            layer_r = t_layer_at(g_stage - 1)
            cur_r = Signal(name="cur_r")
            zero_r = Signal(name="zero_r")
            m.d.comb += [cur_r.eq(cur.bit_select(layer_r, 1)), zero_r.eq(zero_cur.bit_select(layer_r, 1))]
            m.d.comb += st_rh.addr.eq(per_layer(layer_r, sbase, "sbase_r") +
                                      Mux(cur_r, per_layer(layer_r, hs, "hs_r"), 0) + j_r)
            zero_r1 = at(zero_r, 1, "zero_r")
            h_r = Signal(signed(spec.h_fmt.width), name="h_r")
            m.d.comb += h_r.eq(Mux(zero_r1, 0, st_rh.data))
            rh_prod = mul_pipe(m, gate, h_r, tm, "rh_mul", at(t_v, g_stage, "v_rhm"))
            layer_p = t_layer_at(g_stage + ml)
            rh = rq_layers(rh_prod, [fg + fhh] * nl, lambda k: spec.h_fmt, "rh", t_layer_at(L_rz),
                           "rq_rh")
            gate_w = at(gate, ml + RQ_LATENCY, "gate_w")
            m.d.comb += [rh_w.addr.eq(gaddr_w), rh_w.data.eq(rh),
                         rh_w.en.eq(v_w & (kind_w == KIND_R)),
                         z_w.addr.eq(gaddr_w), z_w.data.eq(gate_w),
                         z_w.en.eq(v_w & (kind_w == KIND_Z))]
            # the reset_before r/z pass is done when z of the last unit is written
            last_w = Signal(name="rz_last_w")
            m.d.comb += last_w.eq(j_w == per_layer(layer_w, [h - 1 for h in hs], "hlast_rz"))
            with m.If(v_w & (kind_w == KIND_Z) & last_w):
                m.d.sync += rz_pending.eq(rz_pending & ~(Const(1, nl) << layer_w))

        # n rows
        if reset_after:
            hn = rq_layers(t_ah, fh, lambda k: spec.layers[k].hn_fmt, "hn", t_layer_at(RQ_LATENCY),
                           "rq_hn")
            # long wide delays (waiting for r): memory delay lines with "seq" (iCE40: a register
            # chain costs one logic cell per bit and stage)
            dl = delay_ram if tm == "seq" else delay
            hn_d = dl(m, hn, L_rz - RQ_LATENCY, "hn")
            ax_d = dl(m, t_ax, L_rz + ml, "ax_n")
            j_rr = at(t_j, L_rz - 1, "j_rr")
            layer_rr = t_layer_at(L_rz - 1)
            m.d.comb += r_r.addr.eq(per_layer(layer_rr, gbase, "gbase_rr") + j_rr)
            rhn = mul_pipe(m, r_r.data, hn_d, tm, "rhn_mul", at(t_v, L_rz, "v_rhn"))
            fp = [fg + spec.layers[k].hn_fmt.frac_bits for k in range(nl)]
            s_n, f_n = align_sum(t_layer_at(L_rz + ml), ax_d, fx, rhn, fp, "s_n")
            n_in_stage = L_rz + ml + 1
        else:
            s_n, f_n = align_sum(t_layer, t_ax, fx, t_ah, fh, "s_n")
            n_in_stage = 1
        pre_n = rq_layers(s_n, f_n, lambda k: spec.preact_fmt, "n",
                          t_layer_at(n_in_stage + RQ_LATENCY), "rq_n")
        m.submodules.tanh = tnh = PWLUnit(spec.tanh_table(), tm)
        m.d.comb += [tnh.i.eq(pre_n), tnh.v.eq(at(t_v, n_in_stage + RQ_LATENCY, "v_tanh"))]
        u = n_in_stage + RQ_LATENCY + tnh.latency  # n valid at e + u
        n_val = tnh.o
        # z_j and h_j read one cycle before n comes out
        j_u = at(t_j, u - 1, "j_u")
        layer_u = t_layer_at(u - 1)
        cur_u = Signal(name="cur_u")
        zero_u = Signal(name="zero_u")
        m.d.comb += [cur_u.eq(cur.bit_select(layer_u, 1)), zero_u.eq(zero_cur.bit_select(layer_u, 1))]
        m.d.comb += [z_r.addr.eq(per_layer(layer_u, gbase, "gbase_u") + j_u),
                     st_tail.addr.eq(per_layer(layer_u, sbase, "sbase_u") +
                                     Mux(cur_u, per_layer(layer_u, hs, "hs_u"), 0) + j_u)]
        zero_u1 = at(zero_u, 1, "zero_u")
        h_old = Signal(signed(spec.h_fmt.width), name="h_old")
        m.d.comb += h_old.eq(Mux(zero_u1, 0, st_tail.data))
        diff = Signal(signed(spec.h_fmt.width + 1), name="diff")
        m.d.sync += diff.eq(h_old - n_val)
        z1 = at(z_r.data, 1, "z_upd")
        n1 = at(n_val, 1, "n_upd")
        zprod = mul_pipe(m, z1, diff, tm, "z_mul", at(t_v, u + 1, "v_zm"))
        n2 = at(n1, ml, "n_upd2")
        upd = Signal(signed(max(spec.h_fmt.width + fg, zprod.shape().width) + 1), name="upd")
        m.d.sync += upd.eq((n2 << fg) + zprod)
        L_n = sch.tail_n_latency
        h_new = rq_layers(upd, [fhh + fg] * nl, lambda k: spec.h_fmt, "h", t_layer_at(L_n), "rq_h")
        assert u + 2 + ml + RQ_LATENCY == L_n, (u, L_n)
        v_n = at(t_v, L_n, "v_n")
        kind_n = at(t_kind, L_n, "kind_n")
        j_n = at(t_j, L_n, "j_n")
        layer_n = t_layer_at(L_n)
        cur_n = Signal(name="cur_n")
        m.d.comb += cur_n.eq(cur.bit_select(layer_n, 1))
        wr_n = v_n & (kind_n == KIND_N)
        m.d.comb += [st_w.addr.eq(per_layer(layer_n, sbase, "sbase_n") +
                                  Mux(cur_n, 0, per_layer(layer_n, hs, "hs_n")) + j_n),
                     st_w.data.eq(h_new), st_w.en.eq(wr_n)]
        last_n = Signal(name="last_n")
        m.d.comb += last_n.eq(j_n == per_layer(layer_n, [h - 1 for h in hs], "hlast_n"))
        done_n = wr_n & last_n
        writes_y = self.sequence or not has_head
        if writes_y:
            with m.If(wr_n & (layer_n == top) & top_oen):
                with m.Switch(j_n):
                    for j in range(hs[top]):
                        with m.Case(j):
                            m.d.sync += y_regs[j].eq(h_new)

        # head rows
        if has_head:
            md = spec.mode("head")
            yh = rq_pipe(m, t_ah, fhh + spec.head.w_fmt.frac_bits, spec.head.out_fmt,
                         md.rounding, md.overflow, "rq_head")
            v_h = at(t_v, RQ_LATENCY, "v_head")
            kind_h = at(t_kind, RQ_LATENCY, "kind_head")
            j_h = at(t_j, RQ_LATENCY, "j_head")
            wr_h = v_h & (kind_h == KIND_HEAD)
            targets = yh_regs if (self.sequence and has_head) else y_regs
            with m.If(wr_h):
                with m.Switch(j_h):
                    for j in range(O):
                        with m.Case(j):
                            m.d.sync += targets[j].eq(yh)
            done_h = wr_h & (j_h == O - 1)
        else:
            done_h = Const(0)

        # ---- status updates (tail completions first, controller starts after) -----------------
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += o_valid.eq(0)
        with m.If(done_n):
            m.d.sync += [pending.eq(pending & ~(Const(1, nl) << layer_n)),
                         cur.eq(cur ^ (Const(1, nl) << layer_n))]
            with m.If(layer_n == top):
                if self.sequence:
                    with m.If(~(top_last & Const(int(has_head)))):
                        m.d.sync += [o_valid.eq(1), o_last.eq(top_last)]
                elif not has_head:
                    with m.If(top_last):
                        m.d.sync += [o_valid.eq(1), o_last.eq(1)]
        with m.If(done_h):
            m.d.sync += [o_valid.eq(1), o_last.eq(1)]

        with m.If(go & at_phase_start):
            with m.Switch(ph):
                for i, p_ in enumerate(phases):
                    with m.Case(i):
                        if p_.accept:
                            with m.If(payload.first):
                                m.d.sync += zero_pending.eq((1 << nl) - 1)
                        if p_.first_h_read:
                            k = p_.layer
                            m.d.sync += [pending[k].eq(1), zero_cur[k].eq(zero_pending[k]),
                                         zero_pending[k].eq(0)]
                        if p_.rz_final:
                            m.d.sync += rz_pending[p_.layer].eq(1)
                        if p_.final and p_.layer == top:
                            m.d.sync += [top_oen.eq(writes_out), top_last.eq(cur_last)]

        # ---- output ---------------------------------------------------------------------------
        op = self.o_stream.payload
        m.d.comb += [self.o_stream.valid.eq(o_valid), op.last.eq(o_last)]
        m.d.comb += [op.y[i].eq(y_regs[i]) for i in range(self.y_size)]
        if yh_regs:
            m.d.comb += [op.y_head[i].eq(yh_regs[i]) for i in range(O)]
        return m
