"""The core's state memories: hidden-state banks and gate memories, written by the core itself."""

from __future__ import annotations

from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import Out

__all__ = ["StateMemories"]


def _depth_bits(depth: int) -> int:
    return max(1, (max(depth, 2) - 1).bit_length())


class StateMemories(wiring.Component):
    """The hidden state of every layer (two banks each) and the gate memories.

    Layout: layer k's bank b starts at ``2 * sum(H_0..H_k-1) + b * H_k`` of the state memory;
    the gate memories hold one word per hidden unit of every layer, layer k from
    ``sum(H_0..H_k-1)``.
    ``z`` holds the update gate; reset_after cores keep ``r`` (the reset gate), reset_before
    cores ``rh`` (r * h, requantized to the state format: the vector of the n pass).

    Ports (memory ports as seen from the memories; users connect the flipped signature):
      * ``vec_rd``: state read for the matrix-vector vector (controller).
      * ``upd_rd``: state read of h_j for the update h' = n + z (h - n) (tail).
      * ``rh_h_rd``: state read of h_j for r * h (tail; reset_before only).
      * ``st_wr``: state write of h' (tail).
      * ``z_wr``, ``z_rd``: update gate (tail).
      * ``r_wr``, ``r_rd`` (reset_after) or ``rh_wr``, ``rh_rd`` (reset_before; ``rh_rd`` is
        the controller's vector read of r * h).

    Latency: one cycle from a read address to its data (synchronous read ports); a write
    takes effect for reads in the following cycles. Throughput: one access per port per cycle.
    """

    def __init__(self, config) -> None:
        self.config = config
        spec = config.spec
        self.hidden_sizes = hs = list(config.qm.hidden_sizes)
        self.reset_after = config.qm.reset_after
        h_w, g_w = spec.h_fmt.width, spec.gate_fmt.width
        sa, ga = _depth_bits(2 * sum(hs)), _depth_bits(sum(hs))

        def rd(aw, width):
            return Out(ReadPort.Signature(addr_width=aw, shape=signed(width)))

        def wr(aw, width):
            return Out(WritePort.Signature(addr_width=aw, shape=signed(width)))

        members = {"vec_rd": rd(sa, h_w), "upd_rd": rd(sa, h_w), "st_wr": wr(sa, h_w),
                   "z_wr": wr(ga, g_w), "z_rd": rd(ga, g_w)}
        if self.reset_after:
            members.update(r_wr=wr(ga, g_w), r_rd=rd(ga, g_w))
        else:
            members.update(rh_h_rd=rd(sa, h_w), rh_wr=wr(ga, h_w), rh_rd=rd(ga, h_w))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        spec = self.config.spec
        hs = self.hidden_sizes

        def memory(name, width, depth, writes, reads):
            mem = Memory(shape=signed(width), depth=depth, init=[])
            m.submodules[name] = mem
            for port in writes:
                w = mem.write_port()
                m.d.comb += [w.addr.eq(port.addr), w.data.eq(port.data), w.en.eq(port.en)]
            for port in reads:
                r = mem.read_port()
                m.d.comb += [r.addr.eq(port.addr), r.en.eq(port.en), port.data.eq(r.data)]

        reads = [self.vec_rd, self.upd_rd] + ([] if self.reset_after else [self.rh_h_rd])
        memory("banks", spec.h_fmt.width, 2 * sum(hs), [self.st_wr], reads)
        memory("zmem", spec.gate_fmt.width, sum(hs), [self.z_wr], [self.z_rd])
        if self.reset_after:
            memory("rmem", spec.gate_fmt.width, sum(hs), [self.r_wr], [self.r_rd])
        else:
            memory("rhmem", spec.h_fmt.width, sum(hs), [self.rh_wr], [self.rh_rd])
        return m
