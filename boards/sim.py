"""Run a board top in Amaranth's simulator behind a fake serial port.

The host code (:class:`gru_hw.link.BoardClient`, or raw frames of :mod:`gru_hw.protocol`) runs in
a thread and talks to a :class:`SimSerial`, which has pyserial's ``read``/``write``; simulation
testbenches turn the bytes into bits on the top's ``rx`` pin and decode its ``tx`` pin back into
bytes. Timeouts count
simulated clock cycles, so a slow simulator never times out the host.
"""

from __future__ import annotations

import threading
from typing import Callable

from amaranth import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator


class SimSerial:
    """A pyserial-like port whose other end is a simulated UART."""

    def __init__(self, timeout_cycles: int) -> None:
        self.timeout_cycles = timeout_cycles
        self._cond = threading.Condition()
        self._to_dev = bytearray()
        self._from_dev = bytearray()
        self.cycle = 0
        self.closed = False

    # ---- host side ----
    def write(self, data: bytes) -> int:
        """Queue bytes for the device's RX pin."""
        with self._cond:
            self._to_dev += bytes(data)
            self._cond.notify_all()
        return len(data)

    def read(self, size: int = 1) -> bytes:
        """Return up to ``size`` bytes; fewer when ``timeout_cycles`` simulated cycles pass."""
        with self._cond:
            deadline = self.cycle + self.timeout_cycles
            while len(self._from_dev) < size and self.cycle < deadline and not self.closed:
                if self._to_dev:  # like a real port: the timeout runs once the request is sent
                    deadline = self.cycle + self.timeout_cycles
                self._cond.wait(1.0)
            out = bytes(self._from_dev[:size])
            del self._from_dev[:size]
            return out

    def close(self) -> None:
        """Nothing to release (pyserial compatibility)."""

    def wait_idle(self) -> None:
        """Block until every written byte has been sent to the device."""
        with self._cond:
            while self._to_dev and not self.closed:
                self._cond.wait(1.0)

    # ---- simulator side ----
    def _next_byte(self) -> int | None:
        with self._cond:
            if not self._to_dev:
                return None
            b = self._to_dev[0]
            del self._to_dev[0]
            self._cond.notify_all()
            return b

    def _advance(self, cycles: int) -> None:
        with self._cond:
            self.cycle += cycles
            self._cond.notify_all()

    def _received(self, b: int) -> None:
        with self._cond:
            self._from_dev.append(b)
            self._cond.notify_all()

    def _close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class WithFlash(Elaboratable):
    """A board top whose weights boot from SPI flash, beside a model of that flash.

    ``image``: the flash's bytes at the top's image offset (default: the build's own weight
    image, :meth:`~gru_hw.boards.top.LinkTop.flash_image`); ``rx`` / ``tx`` are the top's.
    """

    def __init__(self, top, image: bytes | None = None) -> None:
        from .flash import SPIFlashModel

        self.top = top
        link = getattr(top, "link", top)
        self.link = link
        self.image = link.flash_image() if image is None else bytes(image)
        self.flash = SPIFlashModel(self.image, link.image_offset)
        self.rx, self.tx = top.rx, top.tx

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.top = self.top
        m.submodules.flash = self.flash
        wiring.connect(m, self.link.flash, self.flash.spi)
        return m


def run_board_sim(top, divisor: int, host: Callable[[SimSerial], object], *,
                  timeout_cycles: int = 200_000, vcd: str | None = None,
                  max_cycles: int = 50_000_000) -> object:
    """Simulate ``top`` (``rx``/``tx`` pins) with ``host(port)`` in a thread; return its result.

    An exception in ``host`` is raised here. ``max_cycles`` bounds the simulation.
    """
    port = SimSerial(timeout_cycles)
    result: dict[str, object] = {}

    def host_thread() -> None:
        try:
            result["value"] = host(port)
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc
        finally:
            result["done"] = True
            port._close()

    sim = Simulator(top)
    sim.add_clock(1e-6)

    async def driver(ctx) -> None:
        ctx.set(top.rx, 1)
        thread = threading.Thread(target=host_thread, daemon=True)
        thread.start()
        while not result.get("done"):
            if port.cycle > max_cycles:
                port._close()
                raise TimeoutError(f"board simulation ran past {max_cycles} cycles")
            b = port._next_byte()
            if b is None:
                await ctx.tick().repeat(divisor)
                port._advance(divisor)
                continue
            for bit in [0] + [(b >> i) & 1 for i in range(8)] + [1]:
                ctx.set(top.rx, bit)
                await ctx.tick().repeat(divisor)
                port._advance(divisor)
        thread.join()

    async def monitor(ctx) -> None:
        # A software 8N1 receiver, one iteration per clock: sample mid-bit after a falling edge.
        bit = -1  # -1: idle; 0: start bit; 1..8: data; 9: stop bit
        wait = 0
        value = 0
        async for _clk, _rst, tx in ctx.tick().sample(top.tx):
            if bit < 0:
                if not tx:
                    bit, wait, value = 0, divisor // 2 - 1, 0
                continue
            if wait:
                wait -= 1
                continue
            if bit == 0 and tx:
                bit = -1  # a glitch
                continue
            if 1 <= bit <= 8:
                value |= tx << (bit - 1)
            if bit == 9:
                if tx:
                    port._received(value)
                bit = -1
                continue
            bit += 1
            wait = divisor - 1

    sim.add_testbench(driver)
    sim.add_process(monitor)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    if "error" in result:
        raise result["error"]
    return result.get("value")
