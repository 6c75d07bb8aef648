"""A tiny stand-in core with the generated core's port contract, for testing the bench itself.

The stand-in keeps ``O`` running sums of its inputs: on every accepted beat
``acc[j] = (0 if first else acc[j]) + x[j % I]`` (wrapping at ``out_width`` bits). It is busy for
``latency`` cycles after each beat (``i_stream.ready`` low), then, on a beat with ``last`` (or on
every beat with ``sequence``), offers ``y = acc`` on ``o_stream`` until it is taken. So it has the
same handshakes, first/last and keep-state behaviour as ``gru_core``, with a model one line long.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from amaranth import Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


from gru_hw.gateware.streams import input_layout as in_layout
from gru_hw.gateware.streams import output_layout as out_layout


class RunningSumCore(wiring.Component):
    """Running sums of the inputs behind the core's stream contract.

    Ports: ``i_stream`` (in): one time step per beat; ``o_stream`` (out): the sums.
    Latency: ``latency + 1`` cycles from an accepted beat to its output. Throughput: one beat per
    ``latency + 1`` cycles (plus the output handshake).
    """

    def __init__(self, inputs: int, outputs: int, *, x_width: int = 8, out_width: int = 12,
                 latency: int = 3, sequence: bool = False, bug_at: int | None = None) -> None:
        self.inputs, self.outputs = inputs, outputs
        self.x_width, self.out_width = x_width, out_width
        self.latency, self.sequence, self.bug_at = latency, sequence, bug_at
        super().__init__({
            "i_stream": In(stream.Signature(in_layout(inputs, x_width))),
            "o_stream": Out(stream.Signature(out_layout(outputs, out_width))),
        })

    def elaborate(self, platform):
        m = Module()
        acc = [Signal(signed(self.out_width), name=f"acc{j}") for j in range(self.outputs)]
        busy = Signal(range(self.latency + 1))
        last = Signal()
        emit = Signal()
        beats = Signal(16)
        p = self.i_stream.payload
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i_stream.ready.eq(1)
                with m.If(self.i_stream.valid):
                    m.d.sync += beats.eq(beats + 1)
                    for j in range(self.outputs):
                        base = acc[j]
                        with m.If(p.first):
                            m.d.sync += acc[j].eq(p.x[j % self.inputs])
                        with m.Else():
                            m.d.sync += acc[j].eq(base + p.x[j % self.inputs])
                    if self.bug_at is not None:  # a deliberate bug, to test the mismatch path
                        with m.If(beats == self.bug_at):
                            m.d.sync += acc[0].eq(acc[0] + 1 + p.x[0])
                    m.d.sync += [last.eq(p.last), emit.eq(p.last | self.sequence),
                                 busy.eq(self.latency)]
                    m.next = "BUSY"
            with m.State("BUSY"):
                with m.If(busy == 0):
                    with m.If(emit):
                        m.next = "OUT"
                    with m.Else():
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += busy.eq(busy - 1)
            with m.State("OUT"):
                m.d.comb += self.o_stream.valid.eq(1)
                with m.If(self.o_stream.ready):
                    m.next = "IDLE"
        for j in range(self.outputs):
            m.d.comb += self.o_stream.payload.y[j].eq(acc[j])
        m.d.comb += self.o_stream.payload.last.eq(last)
        return m


def running_sum_model(xq: np.ndarray, lengths: np.ndarray, outputs: int, out_width: int, *,
                      sequence: bool = False,
                      keep_state: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return what RunningSumCore outputs: y (N, O) and h (N, T, O) per step (zeros past ends)."""
    n, t, i = xq.shape
    y = np.zeros((n, outputs), dtype=np.int64)
    h = np.zeros((n, t, outputs), dtype=np.int64)
    acc = np.zeros(outputs, dtype=np.int64)
    half = 1 << (out_width - 1)
    for s in range(n):
        if not keep_state:
            acc = np.zeros(outputs, dtype=np.int64)
        for step in range(int(lengths[s])):
            acc = acc + xq[s, step, np.arange(outputs) % i]
            acc = (acc + half) % (2 * half) - half
            h[s, step] = acc
        y[s] = acc
    return y, h


def write_standin(out_dir: str | Path, inputs: int, outputs: int, **kwargs) -> Path:
    """Write the stand-in as ``out_dir/gru_core.v`` (top module ``gru_core``); return the path."""
    from amaranth.back import verilog

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    core = RunningSumCore(inputs, outputs, **kwargs)
    path = out / "gru_core.v"
    path.write_text(verilog.convert(core, name="gru_core"))
    return path
