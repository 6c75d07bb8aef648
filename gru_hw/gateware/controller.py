"""The controller: runs the schedule's program of phases, one column per cycle."""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from .chain import ROWSET_CODE
from .mac import tag_layout
from .state import StateGeometry
from .streams import input_layout

__all__ = ["Controller"]

SRC_CODE = {"x": 0, "h_below": 1, "h_own": 2, "rh": 3, "h_top": 4}


class Controller(wiring.Component):
    """Sequences the program (:attr:`gru_hw.schedule.Schedule.phases`) and the layers' status.

    Inside a group it never stalls; at a group or phase start it waits for its dependencies:
    the input beat, the state of a layer being up to date, the r*h vector, room in the output
    register, room in the shift chain (it counts the chain's occupancy: a group's rows, or with
    tail width K > 1 its beats, :meth:`gru_hw.schedule.Phase.group_beats`).

    Ports:
      * ``i_stream`` (in): the input beats (:func:`gru_hw.gateware.streams.input_layout`);
        taken at the start of a step.
      * ``w_block`` (in): a weight packet is offered or being written: take no input beat.
        ``accept`` (out): a beat is taken this cycle.
      * ``waddr`` (out): the weight address of the column issued this cycle (cycle i).
      * ``vec_rd``, ``rh_rd`` (state memory read ports, flipped): the vector element's address
        in cycle i; its data in cycle i + 1.
      * ``valid``, ``first``, ``vec``, ``tag`` (out): the issued column in cycle
        i + :attr:`ISSUE_LATENCY`: operand and tag for :class:`gru_hw.gateware.mac.MACLanes`.
      * ``n_done``/``n_layer``, ``rz_done``/``rz_layer``, ``head_done`` (in): the tail's
        completions. ``cur``, ``zero_cur``, ``top_oen`` (out): layer status for the tail.
      * ``o_valid``, ``o_last`` (out), ``o_ready`` (in): the output register's handshake.

    Latency :attr:`ISSUE_LATENCY` = 1 cycle from issue to operand (synchronous memory reads);
    throughput one column per cycle. Cycle counts: exactly :class:`gru_hw.schedule.Schedule`.
    """

    #: Cycles from a column's issue (addresses) to its operand at ``vec``.
    ISSUE_LATENCY = 1

    def __init__(self, config) -> None:
        self.config = config
        sch, mm = config.schedule, config.memory_map
        hs = list(config.qm.hidden_sizes)
        nl = len(hs)
        geo = StateGeometry(config)
        sa, ga = geo.sa + geo.wb, geo.ga + geo.wb
        h_w = config.spec.h_fmt.width
        members = {
            "i_stream": In(stream.Signature(input_layout(config.qm.input_size,
                                                         config.spec.x_fmt.width))),
            "w_block": In(1), "accept": Out(1),
            "waddr": Out(range(max(sch.weight_depth, 2))),
            "vec_rd": In(ReadPort.Signature(addr_width=sa, shape=signed(h_w))),
            "valid": Out(1), "first": Out(1), "vec": Out(signed(mm.vector_width)),
            "tag": Out(tag_layout(config)),
            "n_done": In(1), "n_layer": In(range(max(nl, 2))),
            "rz_done": In(1), "rz_layer": In(range(max(nl, 2))), "head_done": In(1),
            "cur": Out(nl), "zero_cur": Out(nl), "top_oen": Out(1),
            "o_valid": Out(1), "o_last": Out(1), "o_ready": In(1),
        }
        if not config.qm.reset_after:
            members["rh_rd"] = In(ReadPort.Signature(addr_width=ga, shape=signed(h_w)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        s = _State(self.config)
        self._phase_decode(m, s)
        self._sequence(m, s)
        self._issue(m, s)
        self._status(m, s)
        return m

    def _phase_decode(self, m, s):
        """The current phase's constants and start conditions (a table indexed by ``ph``)."""
        cfg = self.config
        top = len(s.hs) - 1
        P = cfg.lanes
        geo = s.geo
        sbase, gbase, hq = geo.sbase, geo.gbase, geo.hq
        i_valid = self.i_stream.valid
        at_phase_start = s.c_zero & s.g_zero
        with m.Switch(s.ph):
            for i, p_ in enumerate(cfg.schedule.phases):
                with m.Case(i):
                    m.d.comb += [
                        s.k_cols.eq(p_.cols),
                        s.k_lastc.eq(p_.cols - 1), s.k_lastg.eq(p_.groups - 1),
                        s.k_last_rows.eq(p_.rows - (p_.groups - 1) * P),
                        s.k_emit.eq(p_.emit), s.k_src.eq(SRC_CODE[p_.source]),
                        s.k_rowset.eq(ROWSET_CODE[p_.rowset]), s.k_layer.eq(max(p_.layer, 0)),
                    ]
                    if s.wide:
                        m.d.comb += [s.k_bsz.eq(p_.beat), s.k_q.eq(P // p_.beat),
                                     s.k_r.eq(P % p_.beat),
                                     s.k_last_beats.eq(p_.group_beats(p_.groups - 1, P))]
                    ok = Const(1)
                    if p_.accept:
                        ok = ok & i_valid & ~self.w_block
                    if p_.source == "h_below":
                        ok = ok & ~s.pending[p_.layer - 1]
                    if p_.first_h_read:
                        ok = ok & ~s.pending[p_.layer]
                    if p_.source == "rh":
                        ok = ok & ~s.rz_pending[p_.layer]
                    if p_.rowset == "head":
                        ok = ok & ~s.pending[top] & s.o_free
                    if p_.final and p_.layer == top:
                        ok = ok & (~s.writes_out | s.o_free)
                    m.d.comb += s.k_ok.eq(ok)
                    if p_.source in ("h_below", "h_own", "h_top"):
                        lk = {"h_below": p_.layer - 1, "h_own": p_.layer, "h_top": top}[p_.source]
                        row = sbase[lk] + Mux(self.cur[lk], hq[lk], 0) + s.cq
                        m.d.comb += s.vec_addr.eq(row if geo.ways == 1 else
                                                  Cat(row[:geo.sa], s.cw))
                    if p_.source == "h_own":
                        m.d.comb += s.vec_zero.eq(Mux(at_phase_start & Const(int(p_.first_h_read)),
                                                      s.zero_pending[p_.layer],
                                                      self.zero_cur[p_.layer]))
                    if p_.source == "rh":
                        row = gbase[p_.layer] + s.cq
                        m.d.comb += s.rh_addr.eq(row if geo.ways == 1 else
                                                 Cat(row[:geo.ga], s.cw))

    def _sequence(self, m, s):
        """Column, group and phase counters; the go decision; the chain occupancy count."""
        cfg = self.config
        sch = cfg.schedule
        P, TI = cfg.lanes, s.interval
        nph = len(sch.phases)
        at_phase_start = s.c_zero & s.g_zero
        group_ok = s.ser_hold <= s.k_cols
        m.d.comb += s.o_free.eq(~self.o_valid | self.o_ready)
        m.d.comb += s.go.eq(Mux(~s.c_zero, 1, group_ok & Mux(s.g_zero, s.k_ok, 1)))
        m.d.comb += self.i_stream.ready.eq(s.ph_zero & at_phase_start & group_ok & ~self.w_block)
        # == go & ph_zero & at_phase_start (phase 0's only start condition is the beat itself),
        # written as the handshake: shallower logic into the input registers' enables, which
        # was the iCEBreaker's critical path through the other phases' conditions
        m.d.comb += self.accept.eq(self.i_stream.valid & self.i_stream.ready)
        last_col = s.c == s.k_lastc
        last_group = s.g == s.k_lastg
        m.d.comb += [s.last_col.eq(last_col), s.n_rows.eq(Mux(last_group, s.k_last_rows, P))]
        with m.If(s.go):
            m.d.sync += s.c_zero.eq(last_col)
            with m.If(last_col):
                m.d.sync += s.g_zero.eq(last_group)
            with m.If(~last_col):
                m.d.sync += s.c.eq(s.c + 1)
            with m.Else():
                m.d.sync += s.c.eq(0)
                with m.If(~last_group):
                    m.d.sync += s.g.eq(s.g + 1)
                with m.Else():
                    m.d.sync += s.g.eq(0)
            if s.geo.ways > 1:  # c = cq * U + cw: the state row and way of element c
                with m.If(~last_col & (s.cw != s.geo.ways - 1)):
                    m.d.sync += s.cw.eq(s.cw + 1)
                with m.Elif(~last_col):
                    m.d.sync += [s.cw.eq(0), s.cq.eq(s.cq + 1)]
                with m.Else():
                    m.d.sync += [s.cw.eq(0), s.cq.eq(0)]
            head_step = s.cur_last & Const(int(cfg.qm.head_w is not None))
            step_end = last_col & last_group & (
                (s.ph == nph - 1) | ((s.ph == sch.step_phases - 1) & ~head_step))
            with m.If(last_col & last_group):
                m.d.sync += [s.ph.eq(Mux(step_end, 0, s.ph + 1)), s.ph_zero.eq(step_end)]
            m.d.sync += s.waddr.eq(Mux(step_end, 0, s.waddr + 1))
        # every group's rows leave the chain one per cycle (emitted: one per TI cycles), or
        # with tail width K > 1 its beats (Phase.group_beats)
        n_out = self._group_beats(m, s, last_col, last_group) if s.wide else s.n_rows
        with m.If(s.go & last_col):
            m.d.sync += s.ser_hold.eq(Mux(s.k_emit, n_out * TI, n_out))
        with m.Elif(s.ser_hold != 0):
            m.d.sync += s.ser_hold.eq(s.ser_hold - 1)
        m.d.comb += self.waddr.eq(s.waddr)

    def _group_beats(self, m, s, last_col, last_group):
        """Beats of the current group: ceil((lead + rows) / B), where the lead (rows of the
        group's first beat that the group before sent) is tracked when P is not a multiple of
        every phase's beat size B."""
        full = s.k_q
        if s.unaligned:
            x = s.lead + s.k_r
            full = s.k_q + (x > 0) + (x > s.k_bsz)
            with m.If(s.go & last_col):
                m.d.sync += s.lead.eq(Mux(last_group, 0, Mux(x >= s.k_bsz, x - s.k_bsz, x)))
        beats = Signal.like(s.n_rows, name="n_beats")
        m.d.comb += beats.eq(Mux(last_group, s.k_last_beats, full))
        return beats

    def _issue(self, m, s):
        """Input register and the operand stage: vector element and tag in cycle i + 1."""
        cfg = self.config
        payload = self.i_stream.payload
        x_regs = [Signal(signed(cfg.spec.x_fmt.width), name=f"x{i}")
                  for i in range(cfg.qm.input_size)]
        with m.If(self.accept):
            m.d.sync += [x_regs[i].eq(payload.x[i]) for i in range(cfg.qm.input_size)]
            m.d.sync += s.cur_last.eq(payload.last)
        vx = Signal(signed(cfg.spec.x_fmt.width), name="vx")
        m.d.sync += vx.eq(Mux(self.accept, payload.x[0], Array(x_regs)[s.c]))
        m.d.comb += self.vec_rd.addr.eq(s.vec_addr)
        if not cfg.qm.reset_after:
            m.d.comb += self.rh_rd.addr.eq(s.rh_addr)
        src1 = Signal.like(s.k_src, name="src1")
        zero1 = Signal(name="zero1")
        tag = self.tag
        m.d.sync += [
            self.valid.eq(s.go), self.first.eq(s.c_zero), tag.last.eq(s.last_col),
            zero1.eq(s.vec_zero & (s.k_src == SRC_CODE["h_own"])), src1.eq(s.k_src),
            tag.ph.eq(s.ph), tag.layer.eq(s.k_layer), tag.rowset.eq(s.k_rowset),
            tag.nrows.eq(s.n_rows), tag.fgroup.eq(s.g_zero),
        ]
        with m.Switch(src1):
            with m.Case(SRC_CODE["x"]):
                m.d.comb += self.vec.eq(vx)
            with m.Case(SRC_CODE["rh"]):
                if not cfg.qm.reset_after:
                    m.d.comb += self.vec.eq(self.rh_rd.data)
            with m.Default():
                m.d.comb += self.vec.eq(Mux(zero1, 0, self.vec_rd.data))

    def _status(self, m, s):
        """Layer status and the output register's valid/last: tail completions first, then the
        controller's starts (which win where both touch the same bit)."""
        cfg = self.config
        nl = len(s.hs)
        top = nl - 1
        has_head = cfg.qm.head_w is not None
        one = Const(1, nl)
        with m.If(self.rz_done):
            m.d.sync += s.rz_pending.eq(s.rz_pending & ~(one << self.rz_layer))
        with m.If(self.o_valid & self.o_ready):
            m.d.sync += self.o_valid.eq(0)
        with m.If(self.n_done):
            m.d.sync += [s.pending.eq(s.pending & ~(one << self.n_layer)),
                         self.cur.eq(self.cur ^ (one << self.n_layer))]
            with m.If(self.n_layer == top):
                if cfg.sequence:
                    with m.If(~(s.top_last & Const(int(has_head)))):
                        m.d.sync += [self.o_valid.eq(1), self.o_last.eq(s.top_last)]
                elif not has_head:
                    with m.If(s.top_last):
                        m.d.sync += [self.o_valid.eq(1), self.o_last.eq(1)]
        with m.If(self.head_done):
            m.d.sync += [self.o_valid.eq(1), self.o_last.eq(1)]
        with m.If(s.go & s.c_zero & s.g_zero):
            with m.Switch(s.ph):
                for i, p_ in enumerate(cfg.schedule.phases):
                    with m.Case(i):
                        if p_.accept:
                            with m.If(self.i_stream.payload.first):
                                m.d.sync += s.zero_pending.eq((1 << nl) - 1)
                        if p_.first_h_read:
                            k = p_.layer
                            m.d.sync += [s.pending[k].eq(1),
                                         self.zero_cur[k].eq(s.zero_pending[k]),
                                         s.zero_pending[k].eq(0)]
                        if p_.rz_final:
                            m.d.sync += s.rz_pending[p_.layer].eq(1)
                        if p_.final and p_.layer == top:
                            m.d.sync += [self.top_oen.eq(s.writes_out), s.top_last.eq(s.cur_last)]


class _State:
    """The controller's registers and decoded phase constants (shared by its parts)."""

    def __init__(self, config) -> None:
        sch = config.schedule
        self.hs = hs = list(config.qm.hidden_sizes)
        nl = len(hs)
        P = config.lanes
        phases = sch.phases
        max_cols = max(p.cols for p in phases)
        max_groups = max(p.groups for p in phases)
        from .tail import Tail

        self.interval = Tail.interval_of(config.profile)
        self.pending = Signal(nl, name="pending")        # a pass over the layer's h in flight
        self.rz_pending = Signal(nl, name="rz_pending")  # reset_before: r*h / z in flight
        self.zero_pending = Signal(nl, name="zero_pending")
        self.cur_last = Signal(name="cur_last")
        self.top_last = Signal(name="top_last")
        self.ph = Signal(range(len(phases)), name="ph")
        self.g = Signal(range(max_groups + 1), name="g")
        self.c = Signal(range(max_cols + 1), name="c")
        self.geo = geo = StateGeometry(config)
        # with U > 1 ways: element c of a vector is in way cw = c % U, row cq = c // U
        self.cq, self.cw = (self.c, None) if geo.ways == 1 else \
            (Signal(range(max_cols + 1), name="cq"), Signal(range(geo.ways), name="cw"))
        # tail width K > 1: the phase's rows per beat B, P = k_q * B + k_r, beats of its last
        # group; the lead of the current group when some P % B != 0
        self.wide = config.profile.tail_width > 1
        K = config.profile.tail_width
        self.k_bsz = Signal(range(K + 1), name="k_bsz")
        self.k_q = Signal(range(P + 1), name="k_q")
        self.k_r = Signal(range(K + 1), name="k_r")
        self.k_last_beats = Signal(range(P + 1), name="k_last_beats")
        self.unaligned = any(P % ph.beat for ph in phases)
        self.lead = Signal(range(K + 1), name="lead")
        self.waddr = Signal(range(max(sch.weight_depth, 2)), name="waddr")
        self.ser_hold = Signal(range(P * self.interval + 2), name="ser_hold")
        # c == 0, g == 0, ph == 0 as registered flags (updated with c, g, ph), and the phase's
        # last column / group as constants of the phase table: the go decision fans out to
        # the whole issue pipeline
        self.c_zero = Signal(init=1, name="c_zero")
        self.g_zero = Signal(init=1, name="g_zero")
        self.ph_zero = Signal(init=1, name="ph_zero")
        self.k_cols = Signal(range(max_cols + 1), name="k_cols")
        self.k_lastc = Signal(range(max_cols + 1), name="k_lastc")
        self.k_lastg = Signal(range(max_groups + 1), name="k_lastg")
        self.k_last_rows = Signal(range(P + 1), name="k_last_rows")
        self.k_emit = Signal(name="k_emit")
        self.k_src = Signal(range(len(SRC_CODE)), name="k_src")
        self.k_rowset = Signal(range(4), name="k_rowset")
        self.k_layer = Signal(range(max(nl, 2)), name="k_layer")
        self.k_ok = Signal(name="k_ok")
        self.vec_addr = Signal(geo.sa + geo.wb, name="vec_addr")
        self.vec_zero = Signal(name="vec_zero")
        self.rh_addr = Signal(geo.ga + geo.wb, name="rh_addr")
        self.go = Signal(name="go")
        self.last_col = Signal(name="last_col")
        self.n_rows = Signal(range(P + 1), name="n_rows")
        self.o_free = Signal(name="o_free")
        self.writes_out = Const(1) if config.sequence else \
            (self.cur_last & Const(int(config.qm.head_w is None)))
