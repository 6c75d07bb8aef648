"""A plain 8N1 UART: receiver and transmitter with a fixed clocks-per-bit divisor."""


from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ..errors import GruHwError


def uart_divisor(clock_hz: float, baud: int) -> int:
    """Return the clocks-per-bit divisor for ``baud``; refuse rates off by more than 2 %."""
    if baud <= 0:
        raise GruHwError(f"the baud rate must be positive, got {baud}", subject="baud")
    div = round(clock_hz / baud)
    if div < 4:
        raise GruHwError(f"{baud} baud needs at least 4 clocks per bit, the clock is "
                         f"{clock_hz / 1e6:g} MHz", subject="baud")
    err = abs(clock_hz / div - baud) / baud
    if err > 0.02:
        raise GruHwError(f"{baud} baud is {err:.1%} off at {clock_hz / 1e6:g} MHz "
                         f"(divisor {div}); pick another baud rate or clock", subject="baud")
    return div


class UARTReceiver(wiring.Component):
    """Receive 8N1 bytes from a serial line.

    Ports:
        rx        In(1): the serial line (idle high); synchronized inside (2 flip-flops).
        o_stream  Out(stream.Signature(8)): received bytes. A byte is held until taken; when the
                  next byte completes first, the old one is replaced (an overrun).
        error     Out(1): pulses on a framing error (stop bit low); that byte is dropped.

    Latency: a byte appears 9.5 bit times (+ 3 clocks) after its start edge, in the middle of its
    stop bit. Throughput: back-to-back bytes at the line rate.
    """

    rx: In(1, init=1)
    o_stream: Out(stream.Signature(8))
    error: Out(1)

    def __init__(self, divisor: int) -> None:
        if divisor < 4:
            raise ValueError(f"divisor must be at least 4, got {divisor}")
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform) -> Module:
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)
        count = Signal(range(self.divisor))
        bits = Signal(range(9))
        shreg = Signal(8)

        with m.If(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        m.d.sync += self.error.eq(0)
        with m.If(count != 0):
            m.d.sync += count.eq(count - 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += count.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(count == 0):
                    with m.If(~rx):
                        m.d.sync += [count.eq(self.divisor - 1), bits.eq(0)]
                        m.next = "DATA"
                    with m.Else():  # a glitch, not a start bit
                        m.next = "IDLE"
            with m.State("DATA"):
                with m.If(count == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)),
                                 count.eq(self.divisor - 1), bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(count == 0):
                    with m.If(rx):
                        m.d.sync += [self.o_stream.payload.eq(shreg), self.o_stream.valid.eq(1)]
                    with m.Else():
                        m.d.sync += self.error.eq(1)
                    m.next = "IDLE"  # mid stop bit: ready for the next start edge
        return m


class UARTTransmitter(wiring.Component):
    """Send 8N1 bytes on a serial line.

    Ports:
        i_stream  In(stream.Signature(8)): bytes to send; ready while the line is free.
        tx        Out(1): the serial line (idle high).

    Latency: the start bit begins the clock after a byte is accepted. Throughput: one byte per
    10 bit times.
    """

    i_stream: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor: int) -> None:
        if divisor < 4:
            raise ValueError(f"divisor must be at least 4, got {divisor}")
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform) -> Module:
        m = Module()
        count = Signal(range(self.divisor))
        bits = Signal(range(11))
        shreg = Signal(10, init=0x3FF)
        m.d.comb += [self.tx.eq(shreg[0]), self.i_stream.ready.eq(bits == 0)]
        with m.If(bits == 0):
            with m.If(self.i_stream.valid):
                m.d.sync += [shreg.eq((1 << 9) | (self.i_stream.payload << 1)),
                             bits.eq(10), count.eq(self.divisor - 1)]
        with m.Elif(count == 0):
            m.d.sync += [shreg.eq((1 << 9) | (shreg >> 1)), bits.eq(bits - 1),
                         count.eq(self.divisor - 1)]
        with m.Else():
            m.d.sync += count.eq(count - 1)
        return m
