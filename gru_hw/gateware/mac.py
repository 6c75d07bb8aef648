"""The MAC lanes: P weight memories, multipliers and accumulators working row-parallel."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .dsp import ECP5MacMultiplier, ecp5_mac_cells
from .weights import PackedWeights

__all__ = ["MACLanes", "GROUP_LANES"]

#: Lanes per copy of a control signal that fans out to every lane (tail width K > 1).
GROUP_LANES = 8


class MACLanes(wiring.Component):
    """P multiply-accumulate lanes, each with its own weight memory.

    Lane p holds the weights of row ``g*P + p`` of every group g of the program
    (:class:`gru_hw.memory_map.MemoryMap`), so one address ``waddr`` serves all lanes.

    Ports:
      * ``waddr`` (in): weight address, in the issue cycle i (the memories read synchronously).
      * ``valid``, ``first``, ``vec``, ``tag`` (in): in cycle i + 1, the column's vector element
        (``signed(vector_width)``), whether the column is the first of its group (the
        accumulators restart from 0) and a tag carried alongside (``tag_layout``).
      * ``sums`` (out): every lane's running sum including this column's product, with
        ``o_valid`` and ``o_tag`` — combinational, in cycle i + 1 + :attr:`LATENCY`;
        ``o_valid_pre`` / ``o_tag_pre``: the same one cycle earlier (for registered copies).
        At a group's last column these are the group's P dot products.
      * ``w_en`` (in, P bits), ``w_addr``, ``w_data`` (in; only with the weight port): write
        ``w_data`` at ``w_addr`` into the weight memory of every lane whose ``w_en`` bit is set.
        With packed rows (weights in SPRAM) ``w_en`` has a bit per 16-bit slice of a row.

    Weight memories: one block RAM per lane, or one :class:`~gru_hw.gateware.weights.
    PackedWeights` whose row holds every lane's weight (``weight_memory="spram"``); both read
    one cycle after ``waddr``.

    Latency :attr:`LATENCY` = 2 cycles from operands to sums (operands registered before the
    multipliers, product register); throughput one column per cycle, no stall.

    Multipliers (the profile's ``mac_cells``): ``""``, ``*`` between fabric registers (the
    weight word ``wq<p>`` of each lane, one vector register ``vec`` shared by all lanes, the
    product ``prod<p>``). ``"ecp5"``: one :class:`~gru_hw.gateware.dsp.ECP5MacMultiplier` per
    lane, a MULT18X18D whose input register A takes the weight word and B the vector element
    (straight from the ``vec`` port, in the cycle the ``*`` form registers it) and whose output
    register is the product: the same cycles and sums, no fabric registers. Only where
    :func:`~gru_hw.gateware.dsp.ecp5_mac_cells` says so: with ``config.spram_cells`` (Verilog and
    synthesis; the Amaranth simulator, which cannot run the cell, builds cores without) and
    weights and vector elements of at most 18 bits; otherwise the ``*`` form.
    """

    #: Cycles from ``vec`` (operand stage) to ``sums``.
    LATENCY = 2

    def __init__(self, config, tag_layout: data.Layout) -> None:
        self.config = config
        mm = config.memory_map
        self.lanes = config.lanes
        self.depth = mm.weight_depth
        self.weight_width = mm.weight_width
        self.vector_width = mm.vector_width
        self.acc_width = mm.acc_width
        members = {
            "waddr": In(range(max(self.depth, 2))),
            "valid": In(1), "first": In(1), "vec": In(signed(self.vector_width)),
            "tag": In(tag_layout),
            "o_valid": Out(1), "o_tag": Out(tag_layout),
            "o_valid_pre": Out(1), "o_tag_pre": Out(tag_layout),
            "sums": Out(data.ArrayLayout(signed(self.acc_width), self.lanes)),
        }
        if config.weight_port:
            members.update(w_en=In(mm.slices if mm.packed else self.lanes),
                           w_addr=In(range(max(self.depth, 2))),
                           w_data=In(signed(mm.data_width)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        cells = ecp5_mac_cells(cfg)
        if not cells:
            vec = Signal(signed(self.vector_width), name="vec", reset_less=True)
            m.d.sync += vec.eq(self.vec)
        # pipeline control: the operand stage registered once with the operands, then with
        # the product
        v1, f1 = Signal(name="v1"), Signal(name="f1")
        t1 = Signal(self.tag.shape(), name="t1")
        m.d.sync += [v1.eq(self.valid), f1.eq(self.first), t1.eq(self.tag)]
        v2, f2 = Signal(name="v2"), Signal(name="f2")
        t2 = Signal(self.tag.shape(), name="t2")
        m.d.sync += [v2.eq(v1), f2.eq(f1), t2.eq(t1)]
        m.d.comb += [self.o_valid.eq(v2), self.o_tag.eq(t2),
                     self.o_valid_pre.eq(v1), self.o_tag_pre.eq(t1)]
        v2s, f2s = self._group_controls(m, v1, f1, t1, v2, f2)
        words = self._weight_words(m)
        for lane in range(self.lanes):
            if cells:
                # MULT18X18D: the weight word into input register A, the vector element into
                # B (each lane's own: the port fans out to every lane's register), the product
                # in the output register (none is reset; the product is only used under v2)
                mul = ECP5MacMultiplier(self.weight_width, self.vector_width)
                m.submodules[f"mult{lane}"] = mul
                prod = Signal(signed(self.weight_width + self.vector_width),
                              name=f"prod{lane}")
                m.d.comb += [mul.a.eq(words[lane]), mul.b.eq(self.vec), prod.eq(mul.p)]
            else:
                prod = self._fabric_product(m, words[lane], vec, lane)
            # wide cores: no reset (each group restarts it; the reset net reached P x
            # acc_width flip-flops); K = 1 (iCE40: the SB_MAC16's accumulator) as before
            acc = Signal(signed(self.acc_width), name=f"acc{lane}",
                         reset_less=self.config.profile.tail_width > 1)
            acc_next = Signal(signed(self.acc_width), name=f"accn{lane}")
            m.d.comb += acc_next.eq(Mux(f2s[lane // GROUP_LANES], 0, acc) + prod)
            with m.If(v2s[lane // GROUP_LANES]):
                m.d.sync += acc.eq(acc_next)
            m.d.comb += self.sums[lane].eq(acc_next)
        return m

    def _group_controls(self, m, v1, f1, t1, v2, f2):
        """The accumulators' enable and restart, one copy per :data:`GROUP_LANES` lanes with tail
        width K > 1 (many lanes): v2 and f2 each fanned out to P x acc_width inputs, the most
        congested nets of a 96-lane ECP5 build. Copy g is ``v1 & (nrows > g * GROUP_LANES)``
        (and f1 likewise), registered: a distinct function per copy (synthesis merges equal
        flip-flops), and a lane beyond the group's rows holds garbage either way (its sum is
        never read). With K = 1 (the iCE40 cores) one v2 and one f2, as before."""
        groups = -(-self.lanes // GROUP_LANES)
        if self.config.profile.tail_width == 1 or groups == 1:
            return [v2] * groups, [f2] * groups
        v2s, f2s = [v2], [f2]
        for g in range(1, groups):
            vg, fg = Signal(name=f"v2_{g}"), Signal(name=f"f2_{g}")
            busy = t1.nrows > g * GROUP_LANES
            m.d.sync += [vg.eq(v1 & busy), fg.eq(f1 & busy)]
            v2s.append(vg)
            f2s.append(fg)
        return v2s, f2s

    def _fabric_product(self, m, word, vec, lane):
        """Return lane ``lane``'s product register, ``*`` between fabric registers."""
        cfg = self.config
        # the weight word is registered before the multiplier (block RAM output -> hard
        # multiplier was the ECP5 critical path)
        w_q = Signal(signed(self.weight_width), name=f"wq{lane}", reset_less=True)
        m.d.sync += w_q.eq(word)
        # iCE40 profile: a product register without reset lets Yosys (ice40_dsp) put it,
        # w_q and vec into the SB_MAC16's own registers and the accumulator's adder into its
        # adder. Safe: the product is only used under v2.
        prod = Signal(signed(self.weight_width + self.vector_width), name=f"prod{lane}",
                      reset_less=cfg.profile.product_reset_less)
        m.d.sync += prod.eq(w_q * vec)
        return prod

    def _weight_words(self, m):
        """Add the weight memories; return each lane's weight word (one cycle after waddr)."""
        cfg = self.config
        mm = cfg.memory_map
        ww = self.weight_width
        if mm.packed:
            m.submodules.wmem = pw = PackedWeights(width=mm.row_width, depth=self.depth,
                                                   data_width=mm.data_width,
                                                   cells=cfg.spram_cells)
            m.d.comb += [pw.raddr.eq(self.waddr), pw.w_en.eq(self.w_en),
                         pw.w_addr.eq(self.w_addr), pw.w_data.eq(self.w_data)]
            return [pw.rdata[p * ww:(p + 1) * ww].as_signed() for p in range(self.lanes)]
        words = []
        for lane in range(self.lanes):
            # wide cores (K > 1, many lanes): block RAM even when small. Yosys maps a small
            # ROM to logic: the example at 96 lanes on the ECP5-85F got 96 mux trees of 76
            # words on one broadcast address, 5,700 LUTs more and one DP16KD instead of 97
            # (the fit estimate counts block RAMs). K = 1 cores as before.
            attrs = {"ram_style": "block"} if cfg.profile.tail_width > 1 else {}
            wmem = Memory(shape=signed(ww), depth=max(self.depth, 1),
                          init=mm.lane_words[lane] if cfg.init_weights else [], attrs=attrs)
            m.submodules[f"wmem{lane}"] = wmem
            wr = wmem.read_port()
            if cfg.weight_port:
                wp = wmem.write_port()
                m.d.comb += [wp.addr.eq(self.w_addr), wp.data.eq(self.w_data),
                             wp.en.eq(self.w_en[lane])]
            m.d.comb += wr.addr.eq(self.waddr)
            words.append(wr.data)
        return words


def tag_layout(config) -> data.StructLayout:
    """Return the layout of the issue tag carried through the MAC lanes to the shift chain."""
    sch = config.schedule
    nl = len(config.qm.hidden_sizes)
    fields = {
        "last": unsigned(1), "fgroup": unsigned(1),
        "ph": range(max(len(sch.phases), 2)), "layer": range(max(nl, 2)),
        "rowset": unsigned(2), "nrows": range(config.lanes + 1),
    }
    if config.streams > 1:
        fields["stream"] = range(config.streams)
    return data.StructLayout(fields)
