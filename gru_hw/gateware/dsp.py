"""Hard multipliers instantiated with their own registers (``CoreProfile.mac_cells``).

Yosys's ``synth_ecp5`` maps every ``*`` to a MULT18X18D with all of its registers bypassed: the
registers around a product stay in the fabric. A MAC lane has three of them (the weight, the
vector element and the product: 16 + 16 + 32 flip-flops at 16/16 bits), and the vector register
is one register for all lanes, whose fan-out to every multiplier shares a cycle with the
multiplication. :class:`ECP5MacMultiplier` is the same registered product built from one
MULT18X18D whose input registers A and B and output register hold them instead.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ECP5MacMultiplier", "ECP5_MAC_PARAMS", "ECP5_MULT_WIDTH", "ecp5_mult_fits",
           "ecp5_mac_cells"]

#: Operand width of the MULT18X18D (signed operands of up to 18 bits each).
ECP5_MULT_WIDTH = 18

#: The MULT18X18D parameters of :class:`ECP5MacMultiplier`: input registers A and B and the
#: output register on CLK0 (with CE0, RST0), no pipeline register, no cascade. The remaining
#: parameters keep the cell's defaults (those of Yosys's ``share/ecp5/cells_bb.v``).
ECP5_MAC_PARAMS = {
    "REG_INPUTA_CLK": "CLK0", "REG_INPUTA_CE": "CE0", "REG_INPUTA_RST": "RST0",
    "REG_INPUTB_CLK": "CLK0", "REG_INPUTB_CE": "CE0", "REG_INPUTB_RST": "RST0",
    "REG_INPUTC_CLK": "NONE",
    "REG_PIPELINE_CLK": "NONE",
    "REG_OUTPUT_CLK": "CLK0", "REG_OUTPUT_CE": "CE0", "REG_OUTPUT_RST": "RST0",
    "CLK0_DIV": "ENABLED", "HIGHSPEED_CLK": "NONE", "GSR": "ENABLED",
    "CAS_MATCH_REG": "FALSE", "SOURCEB_MODE": "B_SHIFT", "MULT_BYPASS": "DISABLED",
    "RESETMODE": "SYNC",
}


def ecp5_mult_fits(a_width: int, b_width: int) -> bool:
    """Whether a signed ``a_width`` x ``b_width`` product fits one MULT18X18D (both <= 18)."""
    return a_width <= ECP5_MULT_WIDTH and b_width <= ECP5_MULT_WIDTH


def ecp5_mac_cells(config) -> bool:
    """Whether the MAC lanes of ``config`` instantiate MULT18X18D cells.

    Yes when the profile asks for them (``mac_cells == "ecp5"``), the core is built for Verilog
    or synthesis (``config.spram_cells``: the flag that also chooses the SB_SPRAM256KA cells; the
    Amaranth simulator, which cannot run an instance, builds cores with it False) and both
    operands fit the cell (weight and vector element <= 18 bits). Otherwise the lanes keep ``*``
    between fabric registers (Yosys then maps a wider product to several multipliers).
    """
    mm = config.memory_map
    return (config.profile.mac_cells == "ecp5" and bool(config.spram_cells)
            and ecp5_mult_fits(mm.weight_width, mm.vector_width))


class ECP5MacMultiplier(wiring.Component):
    """A registered signed product: ``p`` = ``a`` * ``b`` of two cycles earlier.

    Ports: ``a`` (in, ``signed(a_width)``), ``b`` (in, ``signed(b_width)``), ``p`` (out,
    ``signed(a_width + b_width)``). ``a`` and ``b`` are registered at the clock edge that ends
    the cycle they are presented in, their product at the next one: ``p`` in cycle t + 2 is the
    product of ``a`` and ``b`` of cycle t (the two register stages of ``w_q``/``vec`` and ``prod``
    of :class:`~gru_hw.gateware.mac.MACLanes`). None of the registers is reset (after the
    configuration the cell's registers are 0): users qualify ``p`` with their own valid.

    ``cells`` True: one MULT18X18D (sync domain clock on CLK0, CE0 = 1, RST0 = 0; SIGNEDA and
    SIGNEDB high, operands sign-extended to 18 bits; input registers A and B and the output
    register, no pipeline register: :data:`ECP5_MAC_PARAMS`), for Verilog and synthesis. False:
    the same registers and product in Amaranth (the simulator cannot run the cell). Both operands
    must be at most 18 bits wide (:func:`ecp5_mult_fits`).
    """

    def __init__(self, a_width: int, b_width: int, *, cells: bool = True) -> None:
        if not ecp5_mult_fits(a_width, b_width):
            self._MustUse__silence = True  # never elaborated: no "created but never used"
            raise ValueError(f"a MULT18X18D takes operands of at most {ECP5_MULT_WIDTH} bits, "
                             f"not {a_width} x {b_width}")
        self.a_width = a_width
        self.b_width = b_width
        self.cells = cells
        super().__init__({"a": In(signed(a_width)), "b": In(signed(b_width)),
                          "p": Out(signed(a_width + b_width))})

    def elaborate(self, platform):
        m = Module()
        pw = self.a_width + self.b_width
        if not self.cells:
            a_q = Signal(signed(self.a_width), name="a_q", reset_less=True)
            b_q = Signal(signed(self.b_width), name="b_q", reset_less=True)
            p_q = Signal(signed(pw), name="p_q", reset_less=True)
            m.d.sync += [a_q.eq(self.a), b_q.eq(self.b), p_q.eq(a_q * b_q)]
            m.d.comb += self.p.eq(p_q)
            return m
        w = ECP5_MULT_WIDTH
        a18 = Signal(signed(w), name="a18")
        b18 = Signal(signed(w), name="b18")
        p36 = Signal(signed(2 * w), name="p36")
        m.d.comb += [a18.eq(self.a), b18.eq(self.b)]  # sign-extended
        ports = {}
        for i in range(w):
            ports[f"i_A{i}"] = a18[i]
            ports[f"i_B{i}"] = b18[i]
        for i in range(2 * w):
            ports[f"o_P{i}"] = p36[i]
        m.submodules.mult = Instance(
            "MULT18X18D",
            **{f"p_{k}": v for k, v in ECP5_MAC_PARAMS.items()},
            i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1),
            i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
            i_CLK0=ClockSignal("sync"), i_CE0=Const(1, 1), i_RST0=Const(0, 1),
            **ports)
        # |a * b| <= 2**(pw - 2) for signed a, b: the low pw bits of the 36-bit product hold it
        m.d.comb += self.p.eq(p36[:pw].as_signed())
        return m

