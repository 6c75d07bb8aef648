"""The core's state memories: hidden-state banks and gate memories, written by the core itself."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import Out

__all__ = ["StateMemories", "StateGeometry"]


def _depth_bits(depth: int) -> int:
    return max(1, (max(depth, 2) - 1).bit_length())


class StateGeometry:
    """Where each hidden unit's state and gates live, for a core's tail width.

    With tail width K = 3U > 3 the tail writes U units per cycle, units ``b*U .. b*U + U - 1``
    of beat b: the memories are split into U *ways*, way w holding the units j = w (mod U) at
    row ``j // U``. Per way, layer k's bank b starts at ``sbase[k] + b * hq[k]`` of the state
    memory (``hq[k]`` = ceil(H_k / U)) and its gates at ``gbase[k]``. With one way (K <= 3)
    this is the plain layout: ``hq`` = H, ``sbase[k]`` = 2 * sum(H_0..H_k-1).
    """

    def __init__(self, config) -> None:
        hs = list(config.qm.hidden_sizes)
        self.ways = max(1, config.profile.tail_units)
        u = self.ways
        self.hq = [-(-h // u) for h in hs]
        self.sbase = [2 * sum(self.hq[:k]) for k in range(len(hs))]
        self.gbase = [sum(self.hq[:k]) for k in range(len(hs))]
        self.state_depth = 2 * sum(self.hq)
        self.gate_depth = sum(self.hq)
        #: address bits of a row of the state (gate) memory of one way
        self.sa, self.ga = _depth_bits(self.state_depth), _depth_bits(self.gate_depth)
        #: bits of the way index in the controller's read addresses (0 with one way)
        self.wb = (u - 1).bit_length()
        #: S > 1 streams: each stream has its own copy of every row, at ``row | stream << sa``
        #: (``ga`` for the gate memories): ``sb`` stream bits on top of the row bits
        self.streams = config.streams
        self.sb = (self.streams - 1).bit_length()
        if self.streams > 1:
            self.state_depth = self.streams << self.sa
            self.gate_depth = self.streams << self.ga

    def addr(self, row, stream, bits):
        """The memory address of ``row`` (its low ``bits`` bits: ``sa`` or ``ga``) of
        ``stream``'s copy (the row itself with one stream)."""
        return row if self.streams == 1 else Cat(row[:bits], stream)


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

    With tail width K > 1 (:class:`StateGeometry`): reset_after cores have no gate memories
    (the tail passes r and z of a unit to its n row itself); the tail's ports are arrays of U
    (one per way: ``upd_rd[w]``, ``st_wr[w]``, and for reset_before ``rh_h_rd[w]``,
    ``rh_wr[w]``, ``z_wr[w]``, ``z_rd[w]``), and with U > 1 the controller's ``vec_rd`` /
    ``rh_rd`` addresses are ``row | way << sa`` (or ``ga``): the data comes from that way.

    With S > 1 streams every memory holds a copy per stream (:meth:`StateGeometry.addr`): the
    users put the stream above the row bits of their addresses.

    Latency: one cycle from a read address to its data (synchronous read ports); a write
    takes effect for reads in the following cycles. Throughput: one access per port per cycle.
    """

    def __init__(self, config) -> None:
        self.config = config
        spec = config.spec
        self.hidden_sizes = hs = list(config.qm.hidden_sizes)
        self.reset_after = config.qm.reset_after
        h_w, g_w = spec.h_fmt.width, spec.gate_fmt.width
        self.geometry = geo = StateGeometry(config)
        if config.profile.tail_width > 1:
            self._wide_init(geo, h_w, g_w)
            return
        sa, ga = geo.sa + geo.sb, geo.ga + geo.sb  # = 2 sum(H), sum(H) rows (per stream)

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

    def _wide_init(self, geo, h_w, g_w) -> None:
        """The signature for tail width K > 1 (per-way ports of the tail)."""
        u = geo.ways

        def rd(aw, width, n=None):
            port = Out(ReadPort.Signature(addr_width=aw, shape=signed(width)))
            return port if n is None else port.array(n)

        def wr(aw, width, n):
            return Out(WritePort.Signature(addr_width=aw, shape=signed(width))).array(n)

        sa, ga = geo.sa + geo.sb, geo.ga + geo.sb
        members = {"vec_rd": rd(sa + geo.wb, h_w), "upd_rd": rd(sa, h_w, u),
                   "st_wr": wr(sa, h_w, u)}
        if not self.reset_after:
            members.update(rh_h_rd=rd(sa, h_w, u), rh_wr=wr(ga, h_w, u),
                           z_wr=wr(ga, g_w, u), z_rd=rd(ga, g_w, u),
                           rh_rd=rd(ga + geo.wb, h_w))
        super().__init__(members)

    def _wide_elaborate(self, m) -> None:
        """Tail width K > 1: U ways of each memory; the controller's reads pick their way."""
        spec = self.config.spec
        geo = self.geometry
        u = geo.ways
        reads = [[self.upd_rd[w]] + ([] if self.reset_after else [self.rh_h_rd[w]])
                 for w in range(u)]
        self._way_memory(m, "banks", spec.h_fmt.width, geo.state_depth, self.st_wr, reads,
                         self.vec_rd, geo.sa + geo.sb)
        if not self.reset_after:
            self._way_memory(m, "zmem", spec.gate_fmt.width, geo.gate_depth, self.z_wr,
                             [[self.z_rd[w]] for w in range(u)])
            self._way_memory(m, "rhmem", spec.h_fmt.width, geo.gate_depth, self.rh_wr,
                             [[] for _ in range(u)], self.rh_rd, geo.ga + geo.sb)

    def _way_memory(self, m, name, width, depth, writes, reads, shared=None, rows=0) -> None:
        """One memory per way: ``writes[w]`` and the ports ``reads[w]`` are way w's own;
        ``shared`` (a read port addressed ``row | way << rows``) is served by every way."""
        u = self.geometry.ways
        datas = []
        for w in range(u):
            mem = Memory(shape=signed(width), depth=depth, init=[])
            m.submodules[f"{name}{w}" if u > 1 else name] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(writes[w].addr), wp.data.eq(writes[w].data),
                         wp.en.eq(writes[w].en)]
            for port in reads[w]:
                r = mem.read_port()
                m.d.comb += [r.addr.eq(port.addr), r.en.eq(port.en), port.data.eq(r.data)]
            if shared is not None:
                r = mem.read_port()
                m.d.comb += [r.addr.eq(shared.addr[:rows]), r.en.eq(shared.en)]
                datas.append(r.data)
        if shared is None:
            return
        if u == 1:
            m.d.comb += shared.data.eq(datas[0])
            return
        way = Signal(range(u), name=f"{name}_way")
        with m.If(shared.en):
            m.d.sync += way.eq(shared.addr[rows:])
        with m.Switch(way):
            for w in range(u):
                with m.Case(w):
                    m.d.comb += shared.data.eq(datas[w])

    def elaborate(self, platform):
        m = Module()
        if self.config.profile.tail_width > 1:
            self._wide_elaborate(m)
            return m
        spec = self.config.spec
        geo = self.geometry

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
        memory("banks", spec.h_fmt.width, geo.state_depth, [self.st_wr], reads)
        memory("zmem", spec.gate_fmt.width, geo.gate_depth, [self.z_wr], [self.z_rd])
        if self.reset_after:
            memory("rmem", spec.gate_fmt.width, geo.gate_depth, [self.r_wr], [self.r_rd])
        else:
            memory("rhmem", spec.h_fmt.width, geo.gate_depth, [self.rh_wr], [self.rh_rd])
        return m
