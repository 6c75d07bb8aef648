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
      * S > 1 streams: ``n_stream``, ``rz_stream`` (in): the stream of the tail's completions;
        ``o_stream_id`` (out): the output beat's stream. ``cur``, ``zero_cur`` have a bit per
        stream and layer (stream s, layer k: bit ``s * L + k``), ``top_oen`` one per stream.
        A step runs on its beat's stream's state: it waits only on that stream's previous
        step, so another stream's step can fill the lanes meanwhile. The output register is
        claimed when a pass that writes it starts and freed when its beat is taken.

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
        sa, ga = geo.sa + geo.sb + geo.wb, geo.ga + geo.sb + geo.wb
        h_w = config.spec.h_fmt.width
        ns = config.streams
        members = {
            "i_stream": In(stream.Signature(input_layout(config.qm.input_size,
                                                         config.spec.x_fmt.width, ns))),
            "w_block": In(1), "accept": Out(1),
            "waddr": Out(range(max(sch.weight_depth, 2))),
            "vec_rd": In(ReadPort.Signature(addr_width=sa, shape=signed(h_w))),
            "valid": Out(1), "first": Out(1), "vec": Out(signed(mm.vector_width)),
            "tag": Out(tag_layout(config)),
            "n_done": In(1), "n_layer": In(range(max(nl, 2))),
            "rz_done": In(1), "rz_layer": In(range(max(nl, 2))), "head_done": In(1),
            "cur": Out(ns * nl), "zero_cur": Out(ns * nl), "top_oen": Out(ns),
            "o_valid": Out(1), "o_last": Out(1), "o_ready": In(1),
        }
        if ns > 1:
            members.update(n_stream=In(range(ns)), rz_stream=In(range(ns)),
                           o_stream_id=Out(range(ns)))
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
                    pend, rzp = s.mine(s.pending), s.mine(s.rz_pending)
                    if p_.source == "h_below":
                        ok = ok & ~pend[p_.layer - 1]
                    if p_.first_h_read:
                        ok = ok & ~pend[p_.layer]
                    if p_.source == "rh":
                        ok = ok & ~rzp[p_.layer]
                    if p_.rowset == "head":
                        ok = ok & ~pend[top]
                        if s.streams == 1 or not cfg.sequence:
                            ok = ok & s.o_free
                    if p_.final and p_.layer == top:
                        ok = ok & (~s.writes_out | s.o_free)
                    m.d.comb += s.k_ok.eq(ok)
                    if p_.source in ("h_below", "h_own", "h_top"):
                        lk = {"h_below": p_.layer - 1, "h_own": p_.layer, "h_top": top}[p_.source]
                        row = sbase[lk] + Mux(s.mine(self.cur)[lk], hq[lk], 0) + s.cq
                        row = geo.addr(row, s.cur_s, geo.sa)
                        m.d.comb += s.vec_addr.eq(row if geo.ways == 1 else
                                                  Cat(row[:geo.sa + geo.sb], s.cw))
                    if p_.source == "h_own":
                        m.d.comb += s.vec_zero.eq(Mux(at_phase_start & Const(int(p_.first_h_read)),
                                                      s.mine(s.zero_pending)[p_.layer],
                                                      s.mine(self.zero_cur)[p_.layer]))
                    if p_.source == "rh":
                        row = geo.addr(gbase[p_.layer] + s.cq, s.cur_s, geo.ga)
                        m.d.comb += s.rh_addr.eq(row if geo.ways == 1 else
                                                 Cat(row[:geo.ga + geo.sb], s.cw))

    def _sequence(self, m, s):
        """Column, group and phase counters; the go decision; the chain occupancy count."""
        cfg = self.config
        sch = cfg.schedule
        P, TI = cfg.lanes, s.interval
        nph = len(sch.phases)
        at_phase_start = s.c_zero & s.g_zero
        group_ok = s.ser_hold <= s.k_cols
        if cfg.streams == 1:
            m.d.comb += s.o_free.eq(~self.o_valid | self.o_ready)
        else:  # one output in flight: claimed at its pass's start, freed when its beat is taken
            m.d.comb += s.o_free.eq(~s.o_claim | (self.o_valid & self.o_ready))
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
            if cfg.streams > 1:
                m.d.sync += s.cur_s.eq(payload.stream)
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
        if cfg.streams > 1:  # the beat's stream from its accept cycle on
            m.d.sync += tag.stream.eq(Mux(self.accept, payload.stream, s.cur_s))
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
        nl, ns = len(s.hs), cfg.streams
        top = nl - 1
        has_head = cfg.qm.head_w is not None
        one = Const(1, ns * nl)
        rz_at = self.rz_layer if ns == 1 else self.rz_stream * nl + self.rz_layer
        n_at = self.n_layer if ns == 1 else self.n_stream * nl + self.n_layer
        with m.If(self.rz_done):
            m.d.sync += s.rz_pending.eq(s.rz_pending & ~(one << rz_at))
        with m.If(self.o_valid & self.o_ready):
            m.d.sync += self.o_valid.eq(0)
            if ns > 1:
                m.d.sync += s.o_claim.eq(0)
        top_last = s.top_last if ns == 1 else s.top_last.bit_select(self.n_stream, 1)
        with m.If(self.n_done):
            m.d.sync += [s.pending.eq(s.pending & ~(one << n_at)),
                         self.cur.eq(self.cur ^ (one << n_at))]
            with m.If(self.n_layer == top):
                if cfg.sequence:
                    with m.If(~(top_last & Const(int(has_head)))):
                        m.d.sync += [self.o_valid.eq(1), self.o_last.eq(top_last)]
                elif not has_head:
                    with m.If(top_last):
                        m.d.sync += [self.o_valid.eq(1), self.o_last.eq(1)]
        with m.If(self.head_done):
            m.d.sync += [self.o_valid.eq(1), self.o_last.eq(1)]
        with m.If(s.go & s.c_zero & s.g_zero):
            with m.Switch(s.ph):
                for i, p_ in enumerate(cfg.schedule.phases):
                    with m.Case(i):
                        if p_.accept:
                            with m.If(self.i_stream.payload.first):
                                if ns == 1:
                                    m.d.sync += s.zero_pending.eq((1 << nl) - 1)
                                else:
                                    m.d.sync += s.zero_pending.word_select(
                                        self.i_stream.payload.stream, nl).eq((1 << nl) - 1)
                        if p_.first_h_read:
                            k = p_.layer
                            m.d.sync += [s.mine(s.pending)[k].eq(1),
                                         s.mine(self.zero_cur)[k].eq(s.mine(s.zero_pending)[k]),
                                         s.mine(s.zero_pending)[k].eq(0)]
                        if p_.rz_final:
                            m.d.sync += s.mine(s.rz_pending)[p_.layer].eq(1)
                        if p_.final and p_.layer == top:
                            m.d.sync += [s.mine(self.top_oen, 1).eq(s.writes_out),
                                         s.mine(s.top_last, 1).eq(s.cur_last)]
                        head_claims = p_.rowset == "head" and not cfg.sequence
                        if ns > 1 and (head_claims or (p_.final and p_.layer == top)):
                            claim = Const(1) if p_.rowset == "head" else s.writes_out
                            with m.If(claim):
                                m.d.sync += [s.o_claim.eq(1), self.o_stream_id.eq(s.cur_s)]


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
        # per stream (S > 1: stream s's layer k at bit s * L + k) and layer
        ns = self.streams = config.streams
        self.pending = Signal(ns * nl, name="pending")        # a pass over the layer's h in flight
        self.rz_pending = Signal(ns * nl, name="rz_pending")  # reset_before: r*h / z in flight
        self.zero_pending = Signal(ns * nl, name="zero_pending")
        self.cur_last = Signal(name="cur_last")
        self.top_last = Signal(ns, name="top_last")
        #: the stream of the step being issued (latched with its beat)
        self.cur_s = Signal(range(ns), name="cur_s") if ns > 1 else Const(0, 1)
        #: S > 1: a pass that writes the output register has started, its beat not yet taken
        self.o_claim = Signal(name="o_claim")
        self.nl = nl
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
        self.vec_addr = Signal(geo.sa + geo.sb + geo.wb, name="vec_addr")
        self.vec_zero = Signal(name="vec_zero")
        self.rh_addr = Signal(geo.ga + geo.sb + geo.wb, name="rh_addr")
        self.go = Signal(name="go")
        self.last_col = Signal(name="last_col")
        self.n_rows = Signal(range(P + 1), name="n_rows")
        self.o_free = Signal(name="o_free")
        # the step's top layer's h goes to the output register (with several streams, the
        # final pass of such a step claims it; in sequence mode a last step's head output
        # then follows under the same claim)
        self.writes_out = Const(1) if config.sequence else \
            (self.cur_last & Const(int(config.qm.head_w is None)))

    def mine(self, sig, width=None):
        """The current stream's part of a per-stream signal (``width`` bits per stream: the
        layers by default); the signal itself with one stream."""
        if self.streams == 1:
            return sig
        return sig.word_select(self.cur_s, self.nl if width is None else width)
