"""The shift chain and its exit: every group's P sums leave one row at a time, get their bias,
and are parked (first pass of a gate row) or sent to the tail with their parked partner."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .mac import tag_layout

__all__ = ["ChainExit", "KIND_R", "KIND_Z", "KIND_N", "KIND_HEAD", "ROWSET_CODE", "row_layout"]

KIND_R, KIND_Z, KIND_N, KIND_HEAD = 0, 1, 2, 3
ROWSET_CODE = {"all": 0, "rz": 1, "n": 2, "head": 3}


def row_layout(config) -> data.StructLayout:
    """Return the layout of a row entering the tail."""
    hs = config.qm.hidden_sizes
    aw = config.memory_map.acc_width
    return data.StructLayout({
        "valid": unsigned(1),
        "ax": signed(aw),  # the input part W_i x (+ b_i) of the row
        "ah": signed(aw),  # the recurrent part W_h h (+ b_h), or the head's sum
        "layer": range(max(len(hs), 2)),
        "kind": unsigned(2),  # KIND_R, KIND_Z, KIND_N or KIND_HEAD
        "j": range(max(max(hs), config.qm.output_size) + 1),  # hidden unit (or head output)
    } | ({"stream": range(config.streams)} if config.streams > 1 else {}))


class ChainExit(wiring.Component):
    """The shift chain, the shared bias memory and the shared park buffer.

    Ports:
      * ``load``, ``sums``, ``tag`` (in): in the cycle ``load`` is high, the P sums of a group
        (MAC lanes' ``sums``) and its tag (phase, layer, rowset, rows in the group, first group).
      * ``row`` (out): the tail's input, ``row_layout``: ``valid`` for an emitted row (a parked
        row never reaches the tail), its two parts ``ax`` / ``ah`` with the biases added, and
        its layer, kind (r / z / n / head) and unit ``j``.
      * ``w_en``, ``w_addr``, ``w_data`` (in; run-time weights only): write the bias memory.

    The chain moves one parked row per cycle and one emitted row per ``interval`` cycles
    (:meth:`gru_hw.gateware.tail.Tail.interval_of`), in the order r0 z0 n0 r1 ... (rowset
    "all"), r0 z0 r1 z1 ... ("rz"), n0 n1 ... or the head outputs. The controller never loads a
    group before the previous one has left (it counts the chain's occupancy).

    Latency :meth:`latency_of`: 3 cycles from ``load`` to the first row at ``row`` (chain
    register; bias read and add; park-buffer read), 4 with the profile's ``park_read_reg``
    (the parked word and the new sum registered before the tail).
    """

    def __init__(self, config, interval: int) -> None:
        self.config = config
        self.interval = interval
        super().__init__({
            "load": In(1),
            "sums": In(data.ArrayLayout(signed(config.memory_map.acc_width), config.lanes)),
            "tag": In(tag_layout(config)),
            "row": Out(row_layout(config)),
            **({"w_en": In(1), "w_addr": In(config.memory_map.offset_bits),
                "w_data": In(signed(config.memory_map.data_width))}
               if config.runtime_weights else {}),
        })

    @staticmethod
    def latency_of(profile) -> int:
        """Cycles from ``load`` to the group's first row at ``row``."""
        return 3 + int(profile.park_read_reg)

    @property
    def latency(self) -> int:
        """Cycles from ``load`` to the group's first row at ``row``."""
        return self.latency_of(self.config.profile)

    def elaborate(self, platform):
        m = Module()
        s = self._chain(m)
        self._exit(m, s)
        return m

    def _chain(self, m):
        """The P chain registers, their row counter and the (kind, unit, row) tags."""
        cfg = self.config
        P, TI = cfg.lanes, self.interval
        aw = cfg.memory_map.acc_width
        tag = self.tag
        ch = [Signal(signed(aw), name=f"ch{i}") for i in range(P)]
        cnt = Signal(range(P + 1), name="ch_cnt")
        s_ph = Signal.like(tag.ph, name="s_ph")
        s_layer = Signal.like(tag.layer, name="s_layer")
        s_rowset = Signal(2, name="s_rowset")
        s_stream = Signal.like(tag.stream, name="s_stream") if cfg.streams > 1 else None
        kind = Signal(2, name="kind")
        tj = Signal.like(self.row.j, name="tj")
        hs, O = cfg.qm.hidden_sizes, cfg.qm.output_size
        erow = Signal(range(max(max(3 * h for h in hs), O) + 1), name="erow")
        # emitted rows leave every TI cycles (counted from the load), parked rows every cycle
        tick = Signal(range(max(TI, 2)), name="ch_tick")
        e_emit = Signal(name="e_emit")
        out_now = (cnt != 0) & (~e_emit | (tick == 0))
        if TI > 1:
            with m.If(self.load | (tick == TI - 1)):
                m.d.sync += tick.eq(0)
            with m.Else():
                m.d.sync += tick.eq(tick + 1)
        with m.If(self.load):
            m.d.sync += [ch[i].eq(self.sums[i]) for i in range(P)]
            m.d.sync += [cnt.eq(tag.nrows), s_layer.eq(tag.layer), s_rowset.eq(tag.rowset),
                         s_ph.eq(tag.ph)]
            if s_stream is not None:
                m.d.sync += s_stream.eq(tag.stream)
        with m.Elif(out_now):
            m.d.sync += [ch[i].eq(ch[i + 1]) for i in range(P - 1)]
            m.d.sync += cnt.eq(cnt - 1)
        with m.If(self.load & tag.fgroup):
            m.d.sync += [tj.eq(0), erow.eq(0)]
            with m.Switch(tag.rowset):
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
        return dict(ch0=ch[0], out_now=out_now, s_ph=s_ph, s_layer=s_layer, kind=kind, tj=tj,
                    erow=erow, e_emit=e_emit, s_stream=s_stream)

    def _exit(self, m, s):
        """Bias add (one shared bias memory) and park buffer (one shared accumulator buffer).

        e: addresses; e+1: bias word, sum registered; e+2: park word read (and written);
        e+3 (profile.park_read_reg): the pair registered for the tail.
        """
        cfg = self.config
        sch, mm = cfg.schedule, cfg.memory_map
        aw = mm.acc_width
        e_xlike = Signal(name="e_xlike")
        e_bbase = Signal(range(max(sch.bias_rows, 2)), name="e_bbase")
        e_ubase = Signal(range(max(sch.buffer_rows, 2)), name="e_ubase")
        with m.Switch(s["s_ph"]):
            for i, p_ in enumerate(sch.phases):
                with m.Case(i):
                    m.d.comb += [s["e_emit"].eq(p_.emit), e_xlike.eq(p_.x_like),
                                 e_bbase.eq(p_.brow), e_ubase.eq(p_.urow)]
        bmem = Memory(shape=signed(mm.bias_width), depth=max(len(mm.bias_words), 2),
                      init=mm.bias_words if cfg.init_weights else [])
        m.submodules.bias = bmem
        b_r = bmem.read_port()
        if cfg.runtime_weights:
            bw_ = bmem.write_port()
            m.d.comb += [bw_.addr.eq(self.w_addr), bw_.data.eq(self.w_data),
                         bw_.en.eq(self.w_en)]
        m.d.comb += b_r.addr.eq(e_bbase + s["erow"])
        ubuf = Memory(shape=signed(aw), depth=max(sch.buffer_rows, 2), init=[])
        m.submodules.park = ubuf
        u_w = ubuf.write_port()
        u_r = ubuf.read_port(transparent_for=(u_w,))  # a park and its emit may be 1 cycle apart
        tags = {"layer": s["s_layer"], "kind": s["kind"], "j": s["tj"]}
        if s["s_stream"] is not None:
            tags["stream"] = s["s_stream"]
        x1 = {k: Signal.like(v, name=f"x1_{k}") for k, v in tags.items()}
        x1_v, x1_emit, x1_xlike = (Signal(name=n) for n in ("x1_v", "x1_emit", "x1_xlike"))
        x1_ch = Signal(signed(aw), name="x1_ch")
        x1_u = Signal.like(e_ubase, name="x1_u")
        m.d.sync += [x1_v.eq(s["out_now"]), x1_emit.eq(s["e_emit"]), x1_xlike.eq(e_xlike),
                     x1_ch.eq(s["ch0"]), x1_u.eq(e_ubase + s["erow"])]
        m.d.sync += [x1[k].eq(v) for k, v in tags.items()]
        m.d.comb += u_r.addr.eq(x1_u)
        x2 = {k: Signal.like(v, name=f"x2_{k}") for k, v in tags.items()}
        x2_val = Signal(signed(aw), name="x2_val")
        x2_v, x2_emit, x2_xlike = (Signal(name=n) for n in ("x2_v", "x2_emit", "x2_xlike"))
        x2_u = Signal.like(x1_u, name="x2_u")
        m.d.sync += [x2_val.eq(x1_ch + b_r.data), x2_v.eq(x1_v), x2_emit.eq(x1_emit),
                     x2_xlike.eq(x1_xlike), x2_u.eq(x1_u)]
        m.d.sync += [x2[k].eq(x1[k]) for k in tags]
        m.d.comb += [u_w.addr.eq(x2_u), u_w.data.eq(x2_val), u_w.en.eq(x2_v & ~x2_emit)]
        # The parked word (block RAM output) and the new sum, paired: registered once more
        # before the tail's first adder with park_read_reg (the RAM read straight into the
        # rounding adder was the ECP5 critical path). Writes stay at e+2, so the transparent
        # read still sees a park made one cycle before its emit.
        ax = Mux(x2_xlike, x2_val, u_r.data)
        ah = Mux(x2_xlike, u_r.data, x2_val)
        out = {"valid": x2_v & x2_emit, "ax": ax, "ah": ah, **x2}
        domain = m.d.sync if cfg.profile.park_read_reg else m.d.comb
        domain += [getattr(self.row, k).eq(v) for k, v in out.items()]
