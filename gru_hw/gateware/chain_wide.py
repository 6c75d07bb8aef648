"""The shift chain and its exit for a tail width K > 1: every group's P sums leave in beats of
up to K rows, get their biases, and are parked or sent to the tail with their parked partners."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .chain import ChainExit
from .mac import GROUP_LANES, tag_layout

__all__ = ["WideChainExit", "beat_layout"]


def beat_layout(config) -> data.StructLayout:
    """Return the layout of a beat entering the tail (tail width K > 1).

    ``valid`` (K bits, slot i holds an emitted row), the two parts of each slot's row ``ax`` /
    ``ah`` (biases added), the ``layer``, the ``rowset`` (:data:`gru_hw.gateware.chain.
    ROWSET_CODE`) and the beat's index ``beat`` in its phase: slot i holds the phase's row
    ``beat * B + i`` (B the phase's rows per beat, :meth:`gru_hw.schedule.Schedule.beat_rows`).
    """
    k = config.profile.tail_width
    hs = config.qm.hidden_sizes
    aw = config.memory_map.acc_width
    beats = max(ph.beats for ph in config.schedule.phases)
    return data.StructLayout({
        "valid": unsigned(k),
        "ax": data.ArrayLayout(signed(aw), k),  # the input parts W_i x (+ b_i)
        "ah": data.ArrayLayout(signed(aw), k),  # the recurrent parts W_h h (+ b_h), head sums
        "layer": range(max(len(hs), 2)),
        "rowset": unsigned(2),
        "beat": range(max(beats, 2)),
    } | ({"stream": range(config.streams)} if config.streams > 1 else {}))


def group_leads(schedule) -> list[int]:
    """Return the leads (rows of a group's first beat owned by the group before) that occur."""
    p = schedule.lanes
    return sorted({ph.group_lead(g, p) for ph in schedule.phases for g in range(ph.groups)})


class WideChainExit(wiring.Component):
    """The shift chain, the shared bias memory and the banked park buffer, K rows per cycle.

    Ports:
      * ``load``, ``sums``, ``tag`` (in): as :class:`gru_hw.gateware.chain.ChainExit`.
      * ``beat`` (out, :func:`beat_layout`): the tail's input, one beat per cycle at most.
      * ``w_en``, ``w_addr``, ``w_data`` (in; run-time weights only): write the bias memory
        (its address map is the tail-width-1 one: row r of phase ph at ``brow + r``).

    A phase's rows leave in beats of B rows (K in "all" and "head", 2K/3 in "rz", K/3 in "n"),
    aligned in the phase's row order: slot i of beat b holds row ``b * B + i``. A group whose
    first row is not a multiple of B (P not a multiple of B) first sends the rest of that beat
    (its leading slots empty); the group's last beat may be partial. Parked beats leave one per
    cycle, emitted ones one per ``interval`` cycles; the controller never loads a group before
    the previous one has left (it counts the beats, :meth:`gru_hw.schedule.Phase.group_beats`).

    The bias memory is read at K addresses per cycle (K read ports: synthesis keeps a copy per
    port); the park buffer has K banks, bank i holding slot i of every parked beat.

    Latency :meth:`latency_of` as ChainExit: 3 cycles from ``load`` to the group's first beat
    at ``beat``, 4 with the profile's ``park_read_reg``.
    """

    def __init__(self, config, interval: int) -> None:
        self.config = config
        self.interval = interval
        self.k = config.profile.tail_width
        super().__init__({
            "load": In(1), "load_pre": In(1), "nrows_pre": In(range(config.lanes + 1)),
            "sums": In(data.ArrayLayout(signed(config.memory_map.acc_width), config.lanes)),
            "tag": In(tag_layout(config)),
            "beat": Out(beat_layout(config)),
            **({"w_en": In(1), "w_addr": In(config.memory_map.offset_bits),
                "w_data": In(signed(config.memory_map.data_width))}
               if config.runtime_weights else {}),
        })

    latency_of = staticmethod(ChainExit.latency_of)

    @property
    def latency(self) -> int:
        """Cycles from ``load`` to the group's first beat at ``beat``."""
        return self.latency_of(self.config.profile)

    def elaborate(self, platform):
        m = Module()
        s = self._phase_consts(m)
        self._chain(m, s)
        self._exit(m, s)
        return m

    def _phase_consts(self, m):
        """The chain's current phase and its constants (rows per beat, bias and park bases)."""
        cfg = self.config
        sch = cfg.schedule
        s = {"s_ph": Signal.like(self.tag.ph, name="s_ph"),
             "e_emit": Signal(name="e_emit"), "e_xlike": Signal(name="e_xlike"),
             "e_bsz": Signal(range(self.k + 1), name="e_bsz"),
             "e_bbase": Signal(range(max(sch.bias_rows, 2)), name="e_bbase"),
             "e_ubase": Signal(range(max(sch.buffer_rows, 2)), name="e_ubase")}
        with m.Switch(s["s_ph"]):
            for i, p_ in enumerate(sch.phases):
                with m.Case(i):
                    m.d.comb += [s["e_emit"].eq(p_.emit), s["e_xlike"].eq(p_.x_like),
                                 s["e_bsz"].eq(p_.beat), s["e_bbase"].eq(p_.brow),
                                 s["e_ubase"].eq(p_.urow)]
        return s

    def _chain(self, m, s):
        """The chain registers, their position count, the beat index and the slots' valid bits.

        ``cnt`` counts the positions left from the window's slot 0 (a first beat's empty
        leading slots included); a beat takes B positions. ``lead`` is the current window's
        empty leading slots, ``nlead`` those of the next group's first beat (where this group's
        last beat ended, when it ended inside a beat).
        """
        cfg = self.config
        sch = cfg.schedule
        P, K, TI = cfg.lanes, self.k, self.interval
        aw = cfg.memory_map.acc_width
        tag = self.tag
        leads = group_leads(sch)
        length = P + max(leads)
        # no reset: a register's value counts only while ch_cnt says it holds a row (the reset
        # net reached every one of the P x acc_width flip-flops: one of the 96-lane ECP5
        # build's most congested nets)
        ch = [Signal(signed(aw), name=f"ch{i}", reset_less=True)
              for i in range(max(length, K))]
        cnt = Signal(range(length + 1), name="ch_cnt")
        lead = Signal(range(K), name="ch_lead")
        nlead = Signal(range(K), name="ch_nlead")
        ebeat = Signal.like(self.beat.beat, name="ebeat")
        erow = Signal(range(max(ph.rows for ph in sch.phases) + K + 1), name="erow")
        s_layer = Signal.like(tag.layer, name="s_layer")
        s_rowset = Signal(2, name="s_rowset")
        s_stream = Signal.like(tag.stream, name="s_stream") if cfg.streams > 1 else None
        tick = Signal(range(max(TI, 2)), name="ch_tick")
        bsz = s["e_bsz"]
        out_now = (cnt != 0) & (~s["e_emit"] | (tick == 0))
        if TI > 1:
            with m.If(self.load | (tick == TI - 1)):
                m.d.sync += tick.eq(0)
            with m.Else():
                m.d.sync += tick.eq(tick + 1)
        # A group is loaded at the earliest in the cycle its predecessor's last beat leaves
        # (that beat is read out of the chain in the same cycle): its lead is where that beat
        # ends, or where the last one ended.
        end_lead = Mux(cnt == bsz, 0, cnt)
        new_lead = Mux(tag.fgroup, 0, Mux(out_now, end_lead, nlead))
        sizes = sorted({ph.beat for ph in sch.phases})
        # Aligned beats of one size, one row per cycle of the tail (the wide ECP5 cores): each
        # group of GROUP_LANES chain registers gets its own registered load and shift enables,
        # a distinct function per group (a group beyond the rows loaded, or beyond the rows
        # left, holds garbage it never hands on): one load select fanned out to P x acc_width
        # flip-flops was the most congested net of a 96-lane ECP5-85F build.
        grouped = len(leads) == 1 and len(sizes) == 1 and TI == 1 and P > GROUP_LANES
        if grouped:
            self._grouped_chain(m, ch, cnt, out_now, sizes[0], end_lead, new_lead)
        with m.If(self.load):
            m.d.sync += [cnt.eq(new_lead + tag.nrows), lead.eq(new_lead), s_layer.eq(tag.layer),
                         s_rowset.eq(tag.rowset), s["s_ph"].eq(tag.ph)]
            if s_stream is not None:
                m.d.sync += s_stream.eq(tag.stream)
            # one lead (lanes a multiple of every beat size) or one beat size: no select on
            # the path into every chain register (it fans out to P x acc_width flip-flops)
            if grouped:
                pass
            elif len(leads) == 1:
                m.d.sync += [ch[leads[0] + i].eq(self.sums[i]) for i in range(P)]
            else:
                with m.Switch(new_lead):
                    for o in leads:
                        with m.Case(o):
                            m.d.sync += [ch[o + i].eq(self.sums[i]) for i in range(P)]
        with m.Elif(out_now):
            if grouped:
                pass
            elif len(sizes) == 1:
                b = sizes[0]
                m.d.sync += [ch[i].eq(ch[i + b]) for i in range(len(ch) - b)]
            else:
                with m.Switch(bsz):
                    for b in sizes:
                        with m.Case(b):
                            m.d.sync += [ch[i].eq(ch[i + b]) for i in range(len(ch) - b)]
            m.d.sync += [cnt.eq(Mux(cnt > bsz, cnt - bsz, 0)), lead.eq(0)]
        with m.If(self.load & tag.fgroup):
            m.d.sync += [ebeat.eq(0), erow.eq(0)]
        with m.Elif(out_now & (cnt >= bsz)):  # a whole beat done: the next beat index
            m.d.sync += [ebeat.eq(ebeat + 1), erow.eq(erow + bsz)]
        with m.If(out_now & (cnt <= bsz)):  # the group's last beat
            m.d.sync += nlead.eq(end_lead)
        valid = Signal(K, name="slot_v")
        m.d.comb += [valid[i].eq(out_now & (lead <= i) & (cnt > i) & (bsz > i)) for i in range(K)]
        s.update(ch=ch[:K], valid=valid, s_layer=s_layer, s_rowset=s_rowset, ebeat=ebeat,
                 erow=erow, s_stream=s_stream)

    def _grouped_chain(self, m, ch, cnt, out_now, b, end_lead, new_lead):
        """The chain registers' loads and shifts with one registered enable pair per group of
        :data:`~gru_hw.gateware.mac.GROUP_LANES` registers (beats of ``b`` rows, lead 0).

        ``load_g`` = load with the group holding loaded rows (from the MAC lanes' signals one
        cycle ahead: ``load_pre``, ``nrows_pre``); ``shift_g`` = the chain occupancy ``cnt``
        beyond the group's first register (from cnt's next value), which implies out_now."""
        P = self.config.lanes
        G = GROUP_LANES
        cnt_next = Signal.like(cnt, name="ch_cnt_next")
        m.d.comb += cnt_next.eq(Mux(self.load, new_lead + self.tag.nrows,
                                    Mux(out_now, Mux(cnt > b, cnt - b, 0), cnt)))
        for g in range(-(-len(ch) // G)):
            load_g, shift_g = Signal(name=f"ch_load{g}"), Signal(name=f"ch_shift{g}")
            m.d.sync += [load_g.eq(self.load_pre & (self.nrows_pre > g * G)),
                         shift_g.eq(cnt_next > g * G)]
            members = range(g * G, min((g + 1) * G, len(ch)))
            with m.If(load_g):
                m.d.sync += [ch[i].eq(self.sums[i]) for i in members if i < P]
            with m.Elif(shift_g):
                m.d.sync += [ch[i].eq(ch[i + b]) for i in members if i + b < len(ch)]

    def _exit(self, m, s):
        """Bias add (K reads of the bias memory) and the park buffer (K banks), per slot.

        e: addresses; e+1: bias words, sums registered; e+2: park words read (and written);
        e+3 (profile.park_read_reg): the pairs registered for the tail.
        """
        cfg = self.config
        sch, mm = cfg.schedule, cfg.memory_map
        K = self.k
        aw = mm.acc_width
        # block RAM (a copy per read port): as logic, K ROMs on one address were among the
        # most congested nets of a 96-lane ECP5 build
        bmem = Memory(shape=signed(mm.bias_width), depth=max(len(mm.bias_words), 2),
                      init=mm.bias_words if cfg.init_weights else [],
                      attrs={"ram_style": "block"})
        m.submodules.bias = bmem
        if cfg.runtime_weights:
            bw_ = bmem.write_port()
            m.d.comb += [bw_.addr.eq(self.w_addr), bw_.data.eq(self.w_data),
                         bw_.en.eq(self.w_en)]
        b_r = [bmem.read_port() for _ in range(K)]
        m.d.comb += [b_r[i].addr.eq(s["e_bbase"] + s["erow"] + i) for i in range(K)]
        # tags of the beat, carried with it
        tags = {"layer": s["s_layer"], "rowset": s["s_rowset"], "beat": s["ebeat"]}
        if s["s_stream"] is not None:
            tags["stream"] = s["s_stream"]
        x1 = {k: Signal.like(v, name=f"x1_{k}") for k, v in tags.items()}
        x2 = {k: Signal.like(v, name=f"x2_{k}") for k, v in tags.items()}
        x1_v, x2_v = Signal(K, name="x1_v"), Signal(K, name="x2_v")
        x1_emit, x1_xlike = Signal(name="x1_emit"), Signal(name="x1_xlike")
        x2_emit, x2_xlike = Signal(name="x2_emit"), Signal(name="x2_xlike")
        x1_u = Signal.like(s["e_ubase"], name="x1_u")
        x2_u = Signal.like(x1_u, name="x2_u")
        m.d.sync += [x1_v.eq(s["valid"]), x1_emit.eq(s["e_emit"]), x1_xlike.eq(s["e_xlike"]),
                     x1_u.eq(s["e_ubase"] + s["ebeat"]),
                     x2_v.eq(x1_v), x2_emit.eq(x1_emit), x2_xlike.eq(x1_xlike), x2_u.eq(x1_u)]
        m.d.sync += [x1[k].eq(v) for k, v in tags.items()] + [x2[k].eq(x1[k]) for k in tags]
        out = {"valid": x2_v & x2_emit.replicate(K), **x2}
        domain = m.d.sync if cfg.profile.park_read_reg else m.d.comb
        domain += [getattr(self.beat, k).eq(v) for k, v in out.items()]
        for i in range(K):
            # bank i of the park buffer holds slot i of every parked beat
            ubuf = Memory(shape=signed(aw), depth=max(sch.buffer_rows, 2), init=[])
            m.submodules[f"park{i}"] = ubuf
            u_w = ubuf.write_port()
            u_r = ubuf.read_port(transparent_for=(u_w,))  # a park and its emit 1 cycle apart
            x1_ch = Signal(signed(aw), name=f"x1_ch{i}")
            x2_val = Signal(signed(aw), name=f"x2_val{i}")
            m.d.sync += [x1_ch.eq(s["ch"][i]), x2_val.eq(x1_ch + b_r[i].data)]
            m.d.comb += [u_r.addr.eq(x1_u), u_w.addr.eq(x2_u), u_w.data.eq(x2_val),
                         u_w.en.eq(x2_v[i] & ~x2_emit)]
            # slot i's own copy of the x-like select (a distinct function per slot: an invalid
            # slot's parts are never used), not one select for all K x 2 x acc_width muxes
            xl = Signal(name=f"x2_xlike{i}")
            m.d.sync += xl.eq(x1_xlike & x1_v[i])
            domain += [self.beat.ax[i].eq(Mux(xl, x2_val, u_r.data)),
                       self.beat.ah[i].eq(Mux(xl, u_r.data, x2_val))]
