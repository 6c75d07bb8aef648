"""A stand-in for GRUCore with the same ports, used until (or instead of) the real core.

It is not a GRU: per sequence it computes ``y = wrap(sum_t W x_t)`` with a fixed pseudo-random
integer matrix W (O x I) held in block RAM and ``lanes`` multipliers, so board builds use
multipliers and RAM roughly like a matrix-vector core does.
"""

from __future__ import annotations

import math

import numpy as np
from amaranth import Array, Module, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from gru_hw.gateware.streams import input_layout, output_layout


def standin_weights(qm) -> np.ndarray:
    """Return the stand-in's integer matrix W (O x I) for ``qm``."""
    rng = np.random.default_rng(12345)
    wb = qm.spec.weight_bits
    return rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), size=(qm.output_size, qm.input_size))


def standin_forward(qm, xq: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Return what the stand-in computes for integer inputs (N, T, I): (N, O) in out_fmt width."""
    w = standin_weights(qm).astype(object)
    yw = qm.spec.out_fmt.width
    out = []
    for n in range(xq.shape[0]):
        acc = np.zeros(qm.output_size, dtype=object)
        for t in range(int(lengths[n])):
            acc = acc + w @ xq[n, t].astype(object)
        out.append([((int(a) + (1 << (yw - 1))) % (1 << yw)) - (1 << (yw - 1)) for a in acc])
    return np.array(out, dtype=np.int64)


class StandInCore(wiring.Component):
    """Sum of W x over a sequence; the GRUCore ports (``sequence=False``).

    Ports:
        i_stream  In: ``x`` (I x signed(x_width)), ``first``, ``last``; one step per beat.
        o_stream  Out: ``y`` (O x signed(out_width)), ``last``; one beat per sequence.

    Throughput: one step per ``cycles_per_step`` clocks. Latency: ``cycles_per_step`` + 1 from
    the last step's beat to the output beat.
    """

    def __init__(self, qm, lanes: int) -> None:
        self.qm = qm
        self.lanes = max(1, min(lanes, qm.output_size))
        self.n_in = qm.input_size
        self.n_out = qm.output_size
        self.x_width = qm.spec.x_fmt.width
        self.y_width = qm.spec.out_fmt.width
        self.groups = math.ceil(self.n_out / self.lanes)
        super().__init__({
            "i_stream": In(stream.Signature(input_layout(self.n_in, self.x_width))),
            "o_stream": Out(stream.Signature(output_layout(self.n_out, self.y_width))),
        })

    @property
    def cycles_per_step(self) -> int:
        """Clocks per time step."""
        return self.groups * self.n_in + 2

    def elaborate(self, platform) -> Module:
        m = Module()
        w = standin_weights(self.qm)
        wb = self.qm.spec.weight_bits
        depth = self.groups * self.n_in
        lanes = []
        for lane in range(self.lanes):
            init = []
            for g in range(self.groups):
                o = g * self.lanes + lane
                init += [int(w[o, i]) if o < self.n_out else 0 for i in range(self.n_in)]
            mem = memory.Memory(shape=signed(wb), depth=depth, init=init)
            m.submodules[f"w{lane}"] = mem
            lanes.append(mem.read_port())
        accs = [[Signal(signed(self.y_width), name=f"acc_{l}_{g}") for g in range(self.groups)]
                for l in range(self.lanes)]
        x = Signal.like(self.i_stream.payload.x)
        last = Signal()
        addr = Signal(range(depth + 1))
        g = Signal(range(self.groups + 1))
        i = Signal(range(self.n_in + 1))
        g_d = Signal.like(g)
        i_d = Signal.like(i)
        run_d = Signal()
        for rp in lanes:
            m.d.comb += rp.addr.eq(addr)

        xs = Array(x[k] for k in range(self.n_in))
        xi = Signal(signed(self.x_width))
        m.d.comb += xi.eq(xs[i_d])
        with m.If(run_d):
            for l, rp in enumerate(lanes):
                acc_arr = Array(accs[l])
                m.d.sync += acc_arr[g_d].eq(acc_arr[g_d] + rp.data * xi)

        m.d.sync += run_d.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i_stream.ready.eq(1)
                with m.If(self.i_stream.valid):
                    m.d.sync += [x.eq(self.i_stream.payload.x), last.eq(self.i_stream.payload.last),
                                 addr.eq(0), g.eq(0), i.eq(0)]
                    with m.If(self.i_stream.payload.first):
                        m.d.sync += [a.eq(0) for row in accs for a in row]
                    m.next = "MAC"
            with m.State("MAC"):
                m.d.sync += [run_d.eq(1), g_d.eq(g), i_d.eq(i), addr.eq(addr + 1)]
                with m.If(i == self.n_in - 1):
                    m.d.sync += [i.eq(0), g.eq(g + 1)]
                    with m.If(g == self.groups - 1):
                        m.next = "DRAIN"
                with m.Else():
                    m.d.sync += i.eq(i + 1)
            with m.State("DRAIN"):
                with m.If(~run_d):
                    with m.If(last):
                        m.next = "OUT"
                    with m.Else():
                        m.next = "IDLE"
            with m.State("OUT"):
                m.d.comb += self.o_stream.valid.eq(1)
                for o in range(self.n_out):
                    m.d.comb += self.o_stream.payload.y[o].eq(accs[o % self.lanes][o // self.lanes])
                m.d.comb += self.o_stream.payload.last.eq(1)
                with m.If(self.o_stream.ready):
                    m.next = "IDLE"
        return m
