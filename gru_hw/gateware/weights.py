"""The packed weight memory: every lane's weight of one address in one row, in iCE40 SPRAM.

An iCE40 UltraPlus has four SB_SPRAM256KA blocks (16K x 16 bits, single port, no initial
contents). Side by side they give one 64-bit row per cycle: eight 8-bit weights, one per MAC
lane. :class:`PackedWeights` holds ``depth`` rows of ``width`` bits in ``wide x banks`` blocks
(:attr:`gru_hw.memory_map.MemoryMap.spram_shape`).
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..memory_map import SPRAM_DEPTH, SPRAM_WIDTH

__all__ = ["PackedWeights"]


class PackedWeights(wiring.Component):
    """``depth`` rows of ``width`` bits, read one row per cycle, written through the same port.

    Ports:
      * ``raddr`` (in): row to read; ``rdata`` (out) is that row one cycle later (like a block
        RAM's synchronous read).
      * ``w_en`` (in, one bit per 16-bit slice of a row), ``w_addr``, ``w_data`` (in): write
        ``w_data``'s low 16 bits into the slices of row ``w_addr`` whose bit is set. The memory
        is single-ported: a write takes the port, and the read data of that cycle is undefined. The core writes only while no sequence is
        in flight, so this never meets a read it uses.

    ``cells`` True: SB_SPRAM256KA instances (Verilog and synthesis; simulators use Yosys's model
    of the cell, ``ice40/cells_sim.v``). False: an Amaranth memory behaving the same way for the
    reads the core makes (Amaranth's simulator cannot run the cell). Neither starts with contents.
    """

    def __init__(self, *, width: int, depth: int, data_width: int, cells: bool = True) -> None:
        self.width = width
        self.depth = max(depth, 1)
        self.cells = cells
        self.wide = -(-width // SPRAM_WIDTH)
        self.banks = -(-self.depth // SPRAM_DEPTH)
        super().__init__({
            "raddr": In(range(max(self.depth, 2))), "rdata": Out(width),
            "w_en": In(self.wide), "w_addr": In(range(max(self.depth, 2))),
            "w_data": In(signed(data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        slice_ = self.w_data[:SPRAM_WIDTH]
        if not self.cells:
            mem = Memory(shape=self.wide * SPRAM_WIDTH, depth=self.depth, init=[])
            m.submodules.mem = mem
            rd = mem.read_port(transparent_for=())
            wr = mem.write_port(granularity=SPRAM_WIDTH)
            m.d.comb += [rd.addr.eq(self.raddr), rd.en.eq(~self.w_en.any()),
                         self.rdata.eq(rd.data), wr.addr.eq(self.w_addr),
                         wr.data.eq(Cat(*[slice_] * self.wide)), wr.en.eq(self.w_en)]
            return m
        addr = Signal(range(max(self.depth, 2)), name="spram_addr")
        m.d.comb += addr.eq(Mux(self.w_en.any(), self.w_addr, self.raddr))
        abits = (SPRAM_DEPTH - 1).bit_length()
        low = Signal(abits, name="spram_row")
        m.d.comb += low.eq(addr[:abits])
        bank = addr[abits:] if len(addr) > abits else None
        bank_q = Signal(max(len(addr) - abits, 1), name="spram_bank_q")
        if bank is not None:
            m.d.sync += bank_q.eq(bank)
        outs = []
        for b in range(self.banks):
            sel = (bank == b) if bank is not None else 1
            row = []
            for k in range(self.wide):
                dout = Signal(SPRAM_WIDTH, name=f"spram{b}_{k}_out")
                m.submodules[f"spram{b}_{k}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=low, i_DATAIN=slice_,
                    i_MASKWREN=0b1111, i_WREN=self.w_en[k] & sel, i_CHIPSELECT=1,
                    i_CLOCK=ClockSignal("sync"), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                    o_DATAOUT=dout)
                row.append(dout)
            outs.append(Cat(*row))
        if len(outs) == 1:
            m.d.comb += self.rdata.eq(outs[0][:self.width])
        else:
            with m.Switch(bank_q):
                for b, out in enumerate(outs):
                    with m.Case(b):
                        m.d.comb += self.rdata.eq(out[:self.width])
        return m
