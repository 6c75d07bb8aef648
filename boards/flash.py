"""Weights from the SPI configuration flash at power-up: reader, loader, and a flash model.

    SPI flash pins <-> SPIFlashReader -> bytes -> FlashLoader -> w_stream (core's weight port)
                                                        |
                                                        +-> state (BOOT_*), done

:class:`SPIFlashReader` is an SPI mode-0 master for a standard SPI NOR flash (W25Q128-like): it
wakes the flash (0xAB) and reads bytes sequentially (0x03) at the consumer's pace.
:class:`FlashLoader` reads the weight image (:mod:`gru_hw.flash_image`) from the flash at
power-up, checks its header against the build, writes its words into the core's weight port and
checks its CRC. :class:`SPIFlashModel` is a synthesizable flash for simulation.

The pins are plain signals (``cs`` active high: the board's ``PinsN`` inverts it). ``cipo`` is
sampled without a synchronizer: it is synchronous to the SCK the reader drives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .. import flash_image as fi
from .. import protocol as proto
from ..errors import GruHwError
from ..gateware.streams import weight_layout

#: SPI flash commands
CMD_READ = 0x03
CMD_RELEASE_POWER_DOWN = 0xAB
#: tRES1: from the end of a release-from-power-down to the next command (W25Q128JV: 3 us)
T_RES1_S = 3e-6
#: CS high between two commands (tSHSL; W25Q128JV: 50 ns at most), with margin
T_DESELECT_S = 100e-9
#: flash addresses are 24 bits
FLASH_ADDR_WIDTH = 24


def cycles_for(clock_hz: float, seconds: float) -> int:
    """Return the clock cycles (at least 1) that last at least ``seconds`` at ``clock_hz``."""
    return max(1, math.ceil(round(clock_hz * seconds, 6)))


def spi_pins_signature() -> wiring.Signature:
    """Return the SPI pins as the master (:class:`SPIFlashReader`) sees them.

    Members: ``cs`` Out(1) (chip select, active high), ``clk`` Out(1) (SCK, idle low),
    ``copi`` Out(1) (to the flash's DI), ``cipo`` In(1) (from the flash's DO).
    """
    return wiring.Signature({"cs": Out(1), "clk": Out(1), "copi": Out(1), "cipo": In(1)})


@dataclass(frozen=True)
class SPITiming:
    """The :class:`SPIFlashReader`'s timing, in ``sync`` cycles."""

    divisor: int          #: SCK period
    deselect_cycles: int  #: CS inactive before the first command (tSHSL)
    wake_cycles: int      #: CS inactive after 0xAB (tRES1; at least ``deselect_cycles``)

    @classmethod
    def of(cls, clock_hz: float, divisor: int = 2, wake_cycles: int | None = None) -> "SPITiming":
        """Return the timing at ``clock_hz``: ``wake_cycles`` defaults to 3 us (tRES1)."""
        if divisor < 2:
            raise ValueError(f"the SCK divisor must be at least 2, got {divisor}")
        deselect = cycles_for(clock_hz, T_DESELECT_S)
        if wake_cycles is None:
            wake_cycles = cycles_for(clock_hz, T_RES1_S)
        return cls(divisor, deselect, max(wake_cycles, deselect))

    @property
    def low_cycles(self) -> int:
        """Cycles SCK is low in a period (``divisor - divisor // 2``)."""
        return self.divisor - self.divisor // 2

    @property
    def byte_cycles(self) -> int:
        """Cycles per byte while the consumer keeps up."""
        return 8 * self.divisor

    @property
    def first_byte_cycles(self) -> int:
        """Cycles from the cycle ``start`` is high to the first cycle the first byte is valid."""
        d, lo = self.divisor, self.low_cycles
        # start taken; CS inactive; per frame a low phase with CS active before the first rising
        # edge (CS is registered once more at the pin); 0xAB's 8 bits and a low phase; CS
        # inactive; READ and the address: 32 bits and a low phase; the first byte's 8th rising
        # edge, its register
        return (1 + self.deselect_cycles + 1 + 8 * d + lo + self.wake_cycles + 1 + 32 * d + lo
                + 7 * d + 1)


class SPIFlashReader(wiring.Component):
    """Read bytes from an SPI NOR flash: release from deep power-down, then a sequential READ.

    Ports:
        spi       Out(:func:`spi_pins_signature`): cs, clk, copi Out; cipo In. SPI mode 0: SCK
                  idles low, ``copi`` changes on SCK's falling edge, ``cipo`` is sampled on its
                  rising edge.
        start     In(1): a pulse, taken while idle (``busy`` low): read from ``addr`` on.
        addr      In(24) (without ``address``): the flash byte address to read from, sampled
                  with ``start``.
        o_stream  Out(stream.Signature(8)): the bytes from ``addr`` on, in order. While a byte
                  waits to be taken, SCK stops (low) before the last bit of the next one: no byte
                  is dropped or repeated, however long the consumer waits.
        stop      In(1): end the read (CS goes inactive, a waiting byte is dropped); idle the
                  next cycle.
        busy      Out(1): from ``start`` until ``stop``.

    After ``start``: CS inactive for ``deselect_cycles``; 0xAB (release from deep power-down) in
    its own CS frame; CS inactive for ``wake_cycles`` (tRES1); 0x03 and the 24-bit address; then
    data bytes until ``stop``.

    Parameters: ``clock_hz`` (the sync clock, for the default delays), ``divisor`` (>= 2: SCK
    is sync / divisor; high for ``divisor // 2`` cycles, low for the rest), ``wake_cycles``
    (default: 3 us at ``clock_hz``), ``address`` (a fixed address to read from: no ``addr``
    port and no address register).

    Latency: the first byte is valid ``timing.first_byte_cycles`` cycles after ``start``.
    Throughput: a byte per ``8 * divisor`` cycles (``timing.byte_cycles``) while the consumer
    keeps up.
    """

    def __init__(self, *, clock_hz: float, divisor: int = 2,
                 wake_cycles: int | None = None, address: int | None = None) -> None:
        self.clock_hz = clock_hz
        self.address = address
        try:
            self.timing = SPITiming.of(clock_hz, divisor, wake_cycles)
        except ValueError:
            self._MustUse__silence = True  # a rejected reader is not an unused one
            raise
        self.divisor = divisor
        self.deselect_cycles = self.timing.deselect_cycles
        self.wake_cycles = self.timing.wake_cycles
        super().__init__({
            "spi": Out(spi_pins_signature()),
            "start": In(1), **({"addr": In(FLASH_ADDR_WIDTH)} if address is None else {}),
            "stop": In(1),
            "o_stream": Out(stream.Signature(8)),
            "busy": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        spi, o = self.spi, self.o_stream
        lo, hi = self.divisor - self.divisor // 2, self.divisor // 2  # SCK low / high cycles
        timer = Signal(range(max(self.divisor, self.wake_cycles, self.deselect_cycles) + 1))
        bits = Signal(range(33))  # rising edges in this CS frame (in the data phase: in the byte)
        rx = Signal(8)            # bits received, last in bit 0
        # the address: a register loaded at start, or the constant given to the constructor
        addr = (Signal(FLASH_ADDR_WIDTH) if self.address is None
                else Const(self.address, FLASH_ADDR_WIDTH))
        # COPI: bit ``31 - bits`` of the frame (0xAB, then 0x03 and the address), registered at
        # each falling edge (no 32-bit shift register)
        in_wake = Signal()
        frame = Mux(in_wake, Const(CMD_RELEASE_POWER_DOWN << 24, 32),
                    Cat(addr, Const(CMD_READ, 8)))
        copi = Signal()
        m.d.comb += spi.copi.eq(copi)
        # CS is registered once more on its way to the pin (the pin's register may sit by the
        # pin, away from this logic: the frame logic into CS was the SPRAM builds' critical path);
        # a frame waits one more cycle before its first rising edge, so CS is still set up a full
        # low phase ahead of it
        cs = Signal()
        m.d.sync += spi.cs.eq(cs)
        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)

        def clock(n_bits: int, end) -> None:
            """Clock SCK for a frame of ``n_bits``; when the last falling edge has been low for a
            low phase, ``end()``. Data phase: ``n_bits == 0``, forever, bytes to ``o_stream``."""
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Elif(~spi.clk):
                if n_bits:
                    with m.If(bits == n_bits):
                        end()
                    with m.Else():
                        m.d.sync += [spi.clk.eq(1), timer.eq(hi - 1), bits.eq(bits + 1)]
                else:
                    byte_end = bits == 7
                    # a byte's last rising edge needs the output register free
                    with m.If(~byte_end | ~o.valid | o.ready):
                        m.d.sync += [spi.clk.eq(1), timer.eq(hi - 1),
                                     rx.eq(Cat(spi.cipo, rx[:-1])),
                                     bits.eq(Mux(byte_end, 0, bits + 1))]
                        with m.If(byte_end):
                            m.d.sync += [o.payload.eq(Cat(spi.cipo, rx[:-1])), o.valid.eq(1)]
            with m.Else():
                m.d.sync += [spi.clk.eq(0), timer.eq(lo - 1),
                             copi.eq(frame.bit_select(~bits[:5], 1))]  # bit 31 - bits

        def begin_frame(wake: bool) -> None:
            first = (CMD_RELEASE_POWER_DOWN if wake else CMD_READ) >> 7
            m.d.sync += [cs.eq(1), in_wake.eq(wake), copi.eq(first), bits.eq(0), timer.eq(lo)]

        def leave_on_stop() -> None:
            with m.If(self.stop):
                m.next = "IDLE"

        def wait_then_frame(wake: bool, then: str) -> None:
            """CS inactive until the timer runs out, then begin a frame (state ``then``)."""
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                begin_frame(wake=wake)
                m.next = then
            leave_on_stop()

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start & ~self.stop):
                    m.d.sync += timer.eq(self.deselect_cycles - 1)
                    if self.address is None:
                        m.d.sync += addr.eq(self.addr)
                    m.next = "DESELECT"
            with m.State("DESELECT"):
                wait_then_frame(wake=True, then="WAKE")
            with m.State("WAKE"):
                def wake_end() -> None:
                    m.d.sync += [cs.eq(0), timer.eq(self.wake_cycles - 1)]
                    m.next = "WAKE_WAIT"
                clock(8, wake_end)
                leave_on_stop()
            with m.State("WAKE_WAIT"):
                wait_then_frame(wake=False, then="COMMAND")
            with m.State("COMMAND"):
                def command_end() -> None:
                    m.d.sync += bits.eq(0)
                    m.next = "DATA"
                clock(32, command_end)
                leave_on_stop()
            with m.State("DATA"):
                clock(0, None)
                leave_on_stop()
        with m.If(self.stop):
            m.d.sync += [cs.eq(0), spi.clk.eq(0), o.valid.eq(0)]
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


class FlashLoader(wiring.Component):
    """Load the weight image from the SPI flash into the core's weight port at power-up.

    Ports:
        spi       Out(:func:`spi_pins_signature`): to the flash (an :class:`SPIFlashReader`).
        w_stream  Out(stream.Signature(weight_layout(addr_width, data_width))): the image's
                  words, word i to address ``base + i``, ``last`` on the final one; a beat taken
                  is a word written.
        state     Out(3): ``BOOT_LOADING`` from reset until decided, then ``BOOT_OK``,
                  ``BOOT_MISSING`` (no magic), ``BOOT_MISMATCH`` (version, word size, word count
                  or model hash not the build's) or ``BOOT_CORRUPT`` (bad CRC)
                  (:mod:`gru_hw.flash_image`).
        done      Out(1): high from the cycle ``state`` is decided on (and stays).

    It starts by itself after reset and runs once. On MISSING and MISMATCH no word is written; on
    CORRUPT every word was written (the CRC follows them): the board must not run the core unless
    ``state`` is ``BOOT_OK``. ``done`` comes after the last word was taken. A word's bytes are
    little-endian; ``data`` is the word's low ``data_width`` bits (sign-extended when
    ``data_width > 8 * word_bytes``).

    Parameters: ``words`` (count), ``word_bytes``, ``model_hash`` (8 bytes) -- the header the
    build expects; ``base``, ``addr_width``, ``data_width`` -- the weight port; ``region_words``
    and ``offset_bits`` (optional): the words fill regions of ``region_words`` words, region r
    from ``base + (r << offset_bits)`` (word i of the image goes to ``base + (i // region_words
    << offset_bits) + i % region_words``; default: one region, word i to ``base + i``); ``clock_hz``,
    ``image_offset`` (the flash address of the image), ``divisor``, ``wake_cycles`` -- the SPI
    reader's (:class:`SPIFlashReader`).

    Latency: ``timing.first_byte_cycles`` to the first byte, then the bytes at the reader's rate
    (``byte_cycles`` = 8 * divisor each: ``word_bytes * byte_cycles`` per word), ``done`` 2
    cycles after the last CRC byte (``boot_cycles`` from reset) when the weight port keeps up.
    """

    def __init__(self, *, words: int, word_bytes: int, model_hash: bytes, base: int,
                 addr_width: int, data_width: int, clock_hz: float,
                 image_offset: int = fi.DEFAULT_IMAGE_OFFSET, divisor: int = 2,
                 wake_cycles: int | None = None, region_words: int | None = None,
                 offset_bits: int | None = None) -> None:
        try:
            if region_words is None:
                region_words, offset_bits = max(words, 1), addr_width
            if not (1 <= region_words <= 1 << offset_bits and offset_bits <= addr_width):
                raise ValueError(f"regions of {region_words} words do not fit {offset_bits}-bit "
                                 f"offsets in a {addr_width}-bit weight port")
            #: the first HEADER_BYTES bytes the image must have
            self.header = fi.image_header(words, word_bytes, model_hash)
            if addr_width < 1 or data_width < 1:
                raise ValueError(f"the weight port needs addresses and data, not "
                                 f"{addr_width}-bit addresses and {data_width}-bit data")
            regions = -(-words // region_words)
            last = (regions - 1 << offset_bits) + region_words if offset_bits < addr_width \
                else words
            if regions > 1 and base % (1 << offset_bits):
                raise ValueError(f"regions need a base aligned to 2**{offset_bits}, got {base}")
            if not 0 <= base or base + last > 1 << addr_width:
                raise ValueError(f"{words} words from address {base} do not fit a "
                                 f"{addr_width}-bit weight port")
            size = fi.image_bytes(words, word_bytes)
            if not 0 <= image_offset or image_offset + size > 1 << FLASH_ADDR_WIDTH:
                raise ValueError(f"a {size}-byte image at 0x{image_offset:x} does not fit a "
                                 f"16 MiB flash")
            self.timing = SPITiming.of(clock_hz, divisor, wake_cycles)
        except (ValueError, GruHwError):
            self._MustUse__silence = True  # a rejected loader is not an unused one
            raise
        self.words, self.word_bytes, self.model_hash = words, word_bytes, bytes(model_hash)
        self.base, self.addr_width, self.data_width = base, addr_width, data_width
        self.region_words, self.offset_bits = region_words, offset_bits
        self.clock_hz, self.image_offset, self.divisor = clock_hz, image_offset, divisor
        self.wake_cycles = self.timing.wake_cycles
        super().__init__({
            "spi": Out(spi_pins_signature()),
            "w_stream": Out(stream.Signature(weight_layout(addr_width, data_width))),
            "state": Out(3, init=fi.BOOT_LOADING),
            "done": Out(1),
        })

    @property
    def byte_cycles(self) -> int:
        """Cycles per image byte (the reader's rate)."""
        return self.timing.byte_cycles

    @property
    def boot_cycles(self) -> int:
        """Cycles from reset to ``done`` for a good image, the weight port always ready (the
        first cycle after reset is cycle 0; ``done`` is high from cycle ``boot_cycles``)."""
        t = self.timing
        # the reader's latency (started in cycle 0), the bytes after the first, CHECK, done
        size = fi.image_bytes(self.words, self.word_bytes)
        return t.first_byte_cycles + (size - 1) * t.byte_cycles + 2

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.reader = reader = SPIFlashReader(
            clock_hz=self.clock_hz, divisor=self.divisor, wake_cycles=self.wake_cycles,
            address=self.image_offset)
        wiring.connect(m, wiring.flipped(self.spi), reader.spi)
        m.submodules.crc = crc = proto.crc16_parameters.create()
        r, ws = reader.o_stream, self.w_stream
        wb, n = self.word_bytes, self.words
        byte, take = r.payload, r.valid & r.ready
        m.d.comb += crc.data.eq(byte)

        expected = Const(int.from_bytes(self.header, "little"), 8 * len(self.header))
        idx = Signal(range(fi.HEADER_BYTES))  # header byte; then trailer byte
        bad = Signal()                        # a header byte so far was not the expected one
        in_word = Signal(range(wb))           # byte of the word
        w_reg = Signal(8 * wb)                # the word's bytes so far, the last in the top byte
        word = Cat(w_reg[8:], byte)           # shifted in: the word, when ``byte`` is its last
        w_valid, w_last = Signal(), Signal()
        # the address of the word being assembled (the last word was taken before its first
        # byte: ``ready`` waits for it), so the last word is known by its address
        w_addr = Signal(self.addr_width, init=self.base)
        regions = -(-n // self.region_words)
        last_addr = (self.base + ((regions - 1) << self.offset_bits)
                     + n - (regions - 1) * self.region_words - 1)
        m.d.comb += [ws.valid.eq(w_valid), ws.payload.addr.eq(w_addr),
                     ws.payload.data.eq(w_reg.as_signed()), ws.payload.last.eq(w_last)]
        with m.If(ws.valid & ws.ready):
            m.d.sync += [w_valid.eq(0), w_addr.eq(w_addr + 1)]
            if self.region_words < self.words:  # the next region starts at its own base
                step = (1 << self.offset_bits) - self.region_words + 1
                with m.If(w_addr[:self.offset_bits] == self.region_words - 1):
                    m.d.sync += w_addr.eq(w_addr + step)

        def finish(state) -> None:
            m.d.sync += [self.state.eq(state), self.done.eq(1)]
            m.next = "DONE"

        # The expected header byte and the position tests are registered from ``idx`` (they
        # settle the cycle after ``idx`` moves; bytes come ``byte_cycles`` >= 16 cycles apart):
        # the byte-select mux, the compare and the decisions were one long path (the iCEBreaker's
        # critical path at 33.5 MHz).
        exp_q = Signal(8)
        magic_end, header_end = Signal(), Signal()
        at_magic_end, at_header_end = Signal(), Signal()  # the byte just taken was that one
        m.d.sync += [exp_q.eq(expected.word_select(idx, 8)),
                     magic_end.eq(idx == fi.MAGIC_BYTES - 1),
                     header_end.eq(idx == fi.HEADER_BYTES - 1)]

        with m.FSM():
            with m.State("START"):
                m.d.comb += reader.start.eq(1)
                m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += [r.ready.eq(1), crc.valid.eq(take & (idx >= fi.MAGIC_BYTES))]
                with m.If(take):
                    m.d.sync += [idx.eq(idx + 1), bad.eq(bad | (byte != exp_q)),
                                 at_magic_end.eq(magic_end), at_header_end.eq(header_end)]
                    with m.If(magic_end | header_end):
                        m.next = "DECIDE"
            with m.State("DECIDE"):
                # decided from registers, a cycle after the magic's or the header's last byte
                # (the next byte is byte_cycles away): the compare is not on the path into the
                # reader's stop and the FSM
                with m.If(bad & at_magic_end):
                    finish(fi.BOOT_MISSING)
                with m.Elif(at_header_end):
                    m.d.sync += idx.eq(0)
                    with m.If(bad):
                        finish(fi.BOOT_MISMATCH)
                    with m.Else():
                        m.next = "WORDS"
                with m.Else():
                    m.next = "HEADER"
            with m.State("WORDS"):
                # the word is assembled in the port's register: a byte waits while the last word
                # is still on the port (the core takes a word at once between sequences; the
                # bytes come byte_cycles apart, so this costs nothing then)
                m.d.comb += [r.ready.eq(~w_valid), crc.valid.eq(take)]
                with m.If(take):
                    m.d.sync += [w_reg.eq(word), in_word.eq(in_word + 1)]
                    with m.If(in_word == wb - 1):
                        m.d.sync += [in_word.eq(0), w_valid.eq(1),
                                     w_last.eq(w_addr == last_addr)]
                        with m.If(w_addr == last_addr):
                            m.next = "TRAILER"
            with m.State("TRAILER"):
                m.d.comb += [r.ready.eq(1), crc.valid.eq(take)]
                with m.If(take):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == fi.TRAILER_BYTES - 1):
                        m.next = "CHECK"
            with m.State("CHECK"):
                # the CRC register holds the trailer now; the last word must have been written
                with m.If(~w_valid):
                    finish(Mux(crc.match_detected, fi.BOOT_OK, fi.BOOT_CORRUPT))
            with m.State("DONE"):
                pass
        # the read ends once ``done`` is set (a register: the decisions are not on the path
        # into the reader's frame logic)
        m.d.comb += reader.stop.eq(self.done)
        return m


class SPIFlashModel(wiring.Component):
    """A SPI NOR flash for simulation (synthesizable): READ (0x03) and release from deep
    power-down (0xAB), in SPI mode 0, clocked by ``sync``.

    Ports:
        spi    In(:func:`spi_pins_signature`): cs, clk, copi In; cipo Out. SCK edges are found
               by comparing ``clk`` with its value a cycle before: SCK must come from the ``sync``
               domain and last at least a cycle in each level. ``cipo`` changes in the cycle SCK
               falls (as a flash's output follows its falling edge); it is 1 (a pulled-up
               high-impedance output) outside a READ's data phase.
        awake  Out(1): the flash is out of deep power-down.

    The flash holds ``image`` at ``offset`` (only those bytes are stored, in a
    ``amaranth.lib.memory.Memory``); every other address reads 0xFF (erased). Addresses wrap at
    16 MiB. ``asleep``: the flash starts in deep power-down, where it ignores every command but
    0xAB (a READ begun asleep reads 0xFF); ``awake`` rises ``max(wake_cycles, 1)`` cycles after
    the first cycle of CS inactive that ends the 0xAB (tRES1). A READ returns the bytes from its
    address on, as long as SCK runs (it may stop at any time, low or high).
    """

    def __init__(self, image: bytes, offset: int = 0, *, asleep: bool = True,
                 wake_cycles: int = 0) -> None:
        image = bytes(image)
        if not image or not 0 <= offset or offset + len(image) > 1 << FLASH_ADDR_WIDTH:
            self._MustUse__silence = True  # a rejected model is not an unused one
            raise ValueError(f"the flash model stores 1 byte or more inside 16 MiB, not "
                             f"{len(image)} bytes at 0x{offset:x}")
        self.image, self.offset = image, offset
        self.asleep, self.wake_cycles = asleep, wake_cycles
        super().__init__({"spi": In(spi_pins_signature()), "awake": Out(1, init=not asleep)})

    def elaborate(self, platform) -> Module:
        m = Module()
        spi = self.spi
        m.submodules.mem = mem = memory.Memory(shape=8, depth=len(self.image),
                                               init=list(self.image))
        rd = mem.read_port(domain="comb")
        prev_clk = Signal()
        m.d.sync += prev_clk.eq(spi.clk)
        rise = spi.cs & spi.clk & ~prev_clk
        fall = spi.cs & ~spi.clk & prev_clk

        bits = Signal(range(33))     # command bits received (up to 32)
        shreg = Signal(32)           # the bits received, the last in bit 0
        opcode = Signal(8)
        listening = Signal()         # awake when the command began (else only 0xAB counts)
        reading = Signal()           # in a READ's data phase
        addr = Signal(FLASH_ADDR_WIDTH)
        bit = Signal(3)              # bits of the current byte already sent
        dout = Signal(init=1)
        waking = Signal()
        wake_timer = Signal(range(max(self.wake_cycles, 1)))

        lo, n = self.offset, len(self.image)
        inside = (addr >= lo) & (addr < lo + n)
        m.d.comb += rd.addr.eq((addr - lo)[:len(rd.addr)])
        stored = Mux(inside, rd.data, 0xFF)
        next_dout = Mux(reading, stored.bit_select(~bit, 1), 1)
        m.d.comb += spi.cipo.eq(Mux(~spi.cs, 1, Mux(fall, next_dout, dout)))

        with m.If(~spi.cs):
            # end of a command: 0xAB is executed when CS rises after exactly its 8 bits
            with m.If((bits == 8) & (opcode == CMD_RELEASE_POWER_DOWN) & ~self.awake):
                if self.wake_cycles <= 1:
                    m.d.sync += self.awake.eq(1)
                else:
                    m.d.sync += [waking.eq(1), wake_timer.eq(self.wake_cycles - 2)]
            m.d.sync += [bits.eq(0), reading.eq(0), dout.eq(1)]
        with m.Elif(rise):
            received = Cat(spi.copi, shreg[:-1])
            with m.If(bits != 32):
                m.d.sync += [shreg.eq(received), bits.eq(bits + 1)]
                with m.If(bits == 0):
                    m.d.sync += listening.eq(self.awake)
                with m.If(bits == 7):
                    m.d.sync += opcode.eq(received[:8])
                with m.If((bits == 31) & (opcode == CMD_READ) & listening):
                    m.d.sync += [addr.eq(received[:FLASH_ADDR_WIDTH]), reading.eq(1),
                                 bit.eq(0)]
            with m.Elif(reading):
                m.d.sync += bit.eq(bit + 1)
                with m.If(bit == 7):
                    m.d.sync += addr.eq(addr + 1)
        with m.Elif(fall):
            m.d.sync += dout.eq(next_dout)

        with m.If(waking):
            with m.If(wake_timer == 0):
                m.d.sync += [self.awake.eq(1), waking.eq(0)]
            with m.Else():
                m.d.sync += wake_timer.eq(wake_timer - 1)
        return m
