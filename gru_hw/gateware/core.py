"""GRUCore: the streaming fixed-point GRU (stack + optional dense head), bit-exact with golden.

The core wires five components (each in its own module, its signature its interface, its
latency declared and checked against simulation):

* :class:`~gru_hw.gateware.controller.Controller` runs the schedule's program of phases, one
  column per cycle, and keeps each layer's status;
* :class:`~gru_hw.gateware.mac.MACLanes`: P weight memories, multipliers and accumulators;
* :class:`~gru_hw.gateware.chain.ChainExit`: the shift chain that serializes every group's P
  sums, the shared bias memory and the park buffer (first pass of a gate row);
* :class:`~gru_hw.gateware.tail.Tail`: requantizers, PWL sigmoid/tanh, products, update;
* :class:`~gru_hw.gateware.state.StateMemories`: hidden-state banks and gate memories.

With the profile's tail width K > 1 (K = 3U) the chain and the tail are
:class:`~gru_hw.gateware.chain_wide.WideChainExit` (beats of up to K rows per cycle, parked
and emitted) and :class:`~gru_hw.gateware.tail_wide.UnitTail` (U hidden units per cycle), and
the state memories are split into U ways.

The cycle model is :class:`gru_hw.schedule.Schedule`, whose latencies are the components'.
Every requantization point uses its own rounding and overflow mode from the QuantSpec.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from ..config import CoreConfig
from ..errors import GruHwError
from .chain import ChainExit
from .chain_wide import WideChainExit
from .controller import Controller
from .mac import MACLanes, tag_layout
from .state import StateMemories
from .streams import input_layout, output_layout, weight_layout
from .tail import Tail
from .tail_wide import UnitTail

__all__ = ["GRUCore"]


class GRUCore(wiring.Component):
    """A streaming GRU inference core for one quantized model.

    Built from a :class:`gru_hw.config.CoreConfig` (or, for convenience, ``GRUCore(qm, lanes,
    profile=..., sequence=..., runtime_weights=..., init_weights=...)``, which makes one).

    Ports:
      * ``i_stream`` (in): one time step per beat, payload ``{x: I x signed(x_fmt.width), first,
        last, [stream]}``. ``first`` restarts every layer from h = 0; ``last`` ends a sequence.
        With ``streams`` S > 1 the core keeps S hidden states: ``stream`` (0..S-1) names the
        beat's sequence, and beats of different streams may interleave in any order (a
        stream's own beats in order); a step waits only on its own stream's previous step.
      * ``o_stream`` (out): payload ``{y: O_y x signed(out_width), [y_head], last}``.
        sequence=False: one beat per sequence after its last step; y is the head output
        (out_fmt) or, without a head, the top layer's h (h_fmt); last = 1.
        sequence=True: one beat per step, y = the top layer's h (h_fmt), last copied from the
        input beat; with a head, ``y_head`` (O x out_fmt) carries the head output, valid on the
        beats with last = 1 (zero or stale otherwise). With S > 1, ``stream`` names the beat's
        stream; output beats come in the order their steps were accepted.
      * ``w_stream`` (in; with run-time weights, or weights in SPRAM): weight words, payload
        ``{addr, data, last}`` in the address map of :attr:`memory_map` (:mod:`gru_hw.memory_map`).
        An SPRAM core starts with no weights: load its packed rows' slices before the first
        sequence (without run-time weights, only those regions are writable, and only before
        the first input: the port is then always ready). A load is
        a packet ending with ``last``; each word is written in the cycle it is taken. ``ready``
        is low while a sequence is in flight (first input beat taken .. last output beat
        taken); a packet offered between sequences holds the next input beat back until its
        last word, so no sequence sees half-written weights. Reset does not clear the memories.
      All streams follow the Amaranth stream rules (valid never waits for ready).

    Latency and throughput: :attr:`schedule` (cycles_per_step, cycles_per_sequence(T),
    latency), exact when the input is always valid and the output always ready.
    """

    def __init__(self, config, lanes: int | None = None, **kwargs) -> None:
        if not isinstance(config, CoreConfig):
            try:
                config = CoreConfig(config, lanes, **kwargs)
            except GruHwError:
                self._MustUse__silence = True  # a rejected core is not an unused one
                raise
        elif lanes is not None or kwargs:
            self._MustUse__silence = True
            raise TypeError("pass either a CoreConfig or (qm, lanes, options), not both")
        self.config = config
        qm, spec = config.qm, config.spec
        self.qm = qm
        self.spec = spec
        self.lanes = config.lanes
        self.sequence = config.sequence
        self.runtime_weights = config.runtime_weights
        self.schedule = config.schedule
        self.memory_map = config.memory_map
        self.has_head = qm.head_w is not None
        if self.sequence:
            self.out_width, self.y_size = spec.h_fmt.width, qm.hidden_sizes[-1]
        else:
            self.out_width, self.y_size = spec.out_fmt.width, qm.output_size
        both = self.sequence and self.has_head
        self.streams = config.streams
        self.i_layout = input_layout(qm.input_size, spec.x_fmt.width, config.streams)
        self.o_layout = output_layout(self.y_size, self.out_width,
                                      head_outputs=qm.output_size if both else None,
                                      head_width=spec.out_fmt.width, streams=config.streams)
        ports = {"i_stream": In(stream.Signature(self.i_layout)),
                 "o_stream": Out(stream.Signature(self.o_layout))}
        if config.weight_port:
            mm = self.memory_map
            self.w_layout = weight_layout(mm.addr_width, mm.data_width)
            ports["w_stream"] = In(stream.Signature(self.w_layout))
        super().__init__(ports)

    # ---- figures used by tests and tools -------------------------------------------------------
    @property
    def profile(self):
        """The core's :class:`gru_hw.config.CoreProfile`."""
        return self.config.profile

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

    # ---- the hardware --------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        wide = cfg.profile.tail_width > 1
        m.submodules.controller = ctrl = Controller(cfg)
        m.submodules.lanes = lanes = MACLanes(cfg, tag_layout(cfg))
        chain_cls, tail_cls = (WideChainExit, UnitTail) if wide else (ChainExit, Tail)
        m.submodules.chain = chain = chain_cls(cfg, Tail.interval_of(cfg.profile))
        m.submodules.tail = tail = tail_cls(cfg)
        m.submodules.state = mems = StateMemories(cfg)

        connect(m, flipped(self.i_stream), ctrl.i_stream)
        # controller -> MAC lanes -> chain -> tail
        m.d.comb += [lanes.waddr.eq(ctrl.waddr), lanes.valid.eq(ctrl.valid),
                     lanes.first.eq(ctrl.first), lanes.vec.eq(ctrl.vec), lanes.tag.eq(ctrl.tag),
                     chain.load.eq(lanes.o_valid & lanes.o_tag.last), chain.sums.eq(lanes.sums),
                     chain.tag.eq(lanes.o_tag)]
        if wide:  # registered per-group chain enables need the lanes' signals one cycle ahead
            m.d.comb += [chain.load_pre.eq(lanes.o_valid_pre & lanes.o_tag_pre.last),
                         chain.nrows_pre.eq(lanes.o_tag_pre.nrows)]
        if not wide:
            m.d.comb += tail.row.eq(chain.row)
            # memories
            connect(m, ctrl.vec_rd, mems.vec_rd)
            for name in ("upd_rd", "st_wr", "z_wr", "z_rd"):
                connect(m, getattr(tail, name), getattr(mems, name))
            if cfg.qm.reset_after:
                connect(m, tail.r_wr, mems.r_wr)
                connect(m, tail.r_rd, mems.r_rd)
            else:
                connect(m, tail.rh_h_rd, mems.rh_h_rd)
                connect(m, tail.rh_wr, mems.rh_wr)
                connect(m, ctrl.rh_rd, mems.rh_rd)
        else:
            m.d.comb += tail.beat.eq(chain.beat)
            # memories: the tail's ports one per way
            connect(m, ctrl.vec_rd, mems.vec_rd)
            names = ["upd_rd", "st_wr"]
            if not cfg.qm.reset_after:
                names += ["rh_h_rd", "rh_wr", "z_wr", "z_rd"]
                connect(m, ctrl.rh_rd, mems.rh_rd)
            for name in names:
                for w in range(mems.geometry.ways):
                    connect(m, getattr(tail, name)[w], getattr(mems, name)[w])
        # tail completions -> controller; layer status -> tail
        m.d.comb += [ctrl.n_done.eq(tail.n_done), ctrl.n_layer.eq(tail.n_layer),
                     ctrl.rz_done.eq(tail.rz_done), ctrl.rz_layer.eq(tail.rz_layer),
                     ctrl.head_done.eq(tail.head_done),
                     tail.cur.eq(ctrl.cur), tail.zero_cur.eq(ctrl.zero_cur),
                     tail.top_oen.eq(ctrl.top_oen)]
        if cfg.streams > 1:
            m.d.comb += [ctrl.n_stream.eq(tail.n_stream), ctrl.rz_stream.eq(tail.rz_stream)]
        # output register
        op = self.o_stream.payload
        m.d.comb += [self.o_stream.valid.eq(ctrl.o_valid), ctrl.o_ready.eq(self.o_stream.ready),
                     op.last.eq(ctrl.o_last), op.y.eq(tail.y)]
        if cfg.streams > 1:
            m.d.comb += op.stream.eq(ctrl.o_stream_id)
        if self.sequence and self.has_head:
            m.d.comb += op.y_head.eq(tail.y_head)
        if cfg.weight_port:
            self._weight_port(m, ctrl, lanes, chain)
        return m

    def _weight_port(self, m, ctrl, lanes, chain):
        """Run-time weights: write words into the lane and bias memories between sequences.

        A sequence is in flight from its first beat accepted until its last output beat is
        taken; weight beats wait meanwhile (ready low). Between sequences, an offered weight
        beat holds the next sequence back until the whole packet is written, so no sequence
        ever sees a half-written model and a steady input stream cannot starve the loader.

        A fixed SPRAM build's port is for the initial load only (its biases are fixed, the board
        loads it at power-up before any input): always ready, and an offered packet still holds
        input back until its last word, but a sequence in flight does not hold the packet back.
        """
        ws = self.w_stream
        mm = self.memory_map
        seq_open = Signal(name="seq_open")              # a sequence's beats are arriving
        in_flight = Signal(range(8), name="in_flight")  # sequences sent, output not yet taken
        loading = Signal(name="loading")                # a packet's first beats are written
        w_v = ws.valid & ws.ready
        w_off = ws.payload.addr[:mm.offset_bits]
        w_sel = ws.payload.addr[mm.offset_bits:]
        with m.If(w_v):
            m.d.sync += loading.eq(~ws.payload.last)
        if not self.runtime_weights:
            m.d.comb += [ws.ready.eq(1), ctrl.w_block.eq(ws.valid | loading)]
        else:
            m.d.comb += [ws.ready.eq(~seq_open & (in_flight == 0)),
                         ctrl.w_block.eq((ws.valid & ~seq_open) | loading)]
        # a word is written in the cycle it is taken
        m.d.comb += [lanes.w_addr.eq(w_off), lanes.w_data.eq(ws.payload.data)]
        if mm.packed:
            m.d.comb += [lanes.w_en[k].eq(w_v & (w_sel == k)) for k in range(mm.slices)]
        else:
            m.d.comb += [lanes.w_en[p].eq(w_v & (w_sel == p)) for p in range(self.lanes)]
        if self.runtime_weights:  # else the biases are fixed (bitstream contents)
            m.d.comb += [chain.w_addr.eq(w_off), chain.w_data.eq(ws.payload.data),
                         chain.w_en.eq(w_v & (w_sel == mm.bias_region))]
        if not self.runtime_weights:
            return
        o_done = self.o_stream.valid & self.o_stream.ready & self.o_stream.payload.last
        ip = self.i_stream.payload
        if self.streams == 1:
            with m.If(ctrl.accept):
                m.d.sync += seq_open.eq(~ip.last)
        else:  # a bit per stream: some stream's sequence is between its first and last beat
            opened = Signal(self.streams, name="opened")
            with m.If(ctrl.accept):
                m.d.sync += opened.bit_select(ip.stream, 1).eq(~ip.last)
            m.d.comb += seq_open.eq(opened != 0)
        m.d.sync += in_flight.eq(in_flight + (ctrl.accept & self.i_stream.payload.last) - o_done)
