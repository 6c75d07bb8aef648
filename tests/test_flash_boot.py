"""Weights from the SPI configuration flash at power-up (gru_hw.flash_image, boards/flash.py).

The host's image format round-trips and refuses every kind of bad image; in Amaranth's
simulator, the SPI reader reads back what the flash model stores (under backpressure, in SPI mode
0, waking the flash first) and the loader writes exactly the image's words into the weight port,
or refuses a missing, foreign or corrupt image with the right state.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth import Module
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.sim import Simulator

from gru_hw import flash_image as fi
from gru_hw.boards.flash import FlashLoader, SPIFlashModel, SPIFlashReader, SPITiming
from gru_hw.errors import GruHwError
from gru_hw.protocol import crc16

CLOCK_HZ = 12e6  # tRES1 = 36 cycles: short simulations
HASH = bytes.fromhex("0123456789abcdef")
OTHER_HASH = bytes.fromhex("0123456789abcdee")


def _words(rng: np.random.Generator, n: int, width: int) -> list[int]:
    """``n`` random signed ``width``-bit words, both extremes among them."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    w = [int(v) for v in rng.integers(lo, hi, size=n, endpoint=True)]
    w[0], w[-1] = lo, hi
    if n > 2:
        w[1] = -1
    return w


# ---- the image format (host) --------------------------------------------------------------------
@pytest.mark.parametrize("word_bytes", [1, 2, 3, 8])
def test_image_round_trip(word_bytes):
    words = _words(np.random.default_rng(word_bytes), 37, 8 * word_bytes)
    image = fi.build_image(words, word_bytes, HASH)
    assert len(image) == fi.image_bytes(37, word_bytes) == fi.image_bytes(words, word_bytes)
    assert len(image) == 18 + 37 * word_bytes + 2 and fi.HEADER_BYTES == 18
    # the layout, byte by byte
    assert image[:4] == fi.IMAGE_MAGIC == b"GRUW"
    assert image[4] == fi.IMAGE_VERSION == 1 and image[5] == word_bytes
    assert int.from_bytes(image[6:10], "little") == 37 and image[10:18] == HASH
    assert image[18:18 + word_bytes] == (words[0] % (1 << 8 * word_bytes)).to_bytes(
        word_bytes, "little")
    end = 18 + 37 * word_bytes
    assert int.from_bytes(image[end:], "big") == crc16(image[4:end])
    assert crc16(image[4:]) == 0  # the residue the gateware checks
    assert image[:18] == fi.image_header(37, word_bytes, HASH)
    got = fi.parse_image(image, word_bytes=word_bytes, words=37, model_hash=HASH)
    assert got == words and all(type(v) is int for v in got)
    # bytes after the image (the rest of a flash dump) are ignored
    assert fi.parse_image(image + b"\xff" * 100) == words


def test_image_parse_errors():
    words = [5, -3, 1000, -32768, 32767]
    image = fi.build_image(words, 2, HASH)
    end = 18 + 2 * len(words)

    def fixed_crc(img: bytearray) -> bytes:  # a header change that keeps the CRC right
        return bytes(img[:end]) + crc16(bytes(img[4:end])).to_bytes(2, "big")

    def bad(data, match, **expect):
        with pytest.raises(GruHwError, match=match):
            fi.parse_image(data, **expect)

    bad(b"\xff" * 64, r"no weight image \(erased flash\?\)")
    bad(b"\x00" * 64, r"no weight image \(erased flash\?\)")
    bad(b"", r"no weight image")
    bad(b"GRUX" + image[4:], r"no weight image")
    version = bytearray(image)
    version[4] = 2
    bad(fixed_crc(version), r"format version 2; this build reads version 1")
    zero_wb = bytearray(image)
    zero_wb[5] = 0
    bad(fixed_crc(zero_wb), r"header is wrong: 0-byte words")
    bad(image, r"has 2-byte words, the build takes 3-byte words", word_bytes=3)
    bad(image, r"has 5 words, the build takes 6", words=6)
    bad(image, r"is for model 0123456789abcdef, the build holds model 0123456789abcdee",
        model_hash=OTHER_HASH)
    for cut in (2, 10, 17, 18, end, len(image) - 1):
        bad(image[:cut], r"truncated")
    flipped = bytearray(image)
    flipped[18 + 3] ^= 0x10  # a payload bit
    bad(bytes(flipped), r"corrupt: bad CRC")
    crc_flipped = bytearray(image)
    crc_flipped[-1] ^= 0x01
    bad(bytes(crc_flipped), r"corrupt: bad CRC")
    more = bytearray(image)
    more[6] = 4  # a header field covered by the CRC, no expectation given
    bad(bytes(more), r"corrupt: bad CRC")
    # the good image with the right expectations parses
    assert fi.parse_image(image, word_bytes=2, words=5, model_hash=HASH) == words


def test_build_image_refuses_bad_input():
    with pytest.raises(GruHwError, match="does not fit 1 bytes"):
        fi.build_image([1, 128], 1, HASH)
    with pytest.raises(GruHwError, match="does not fit 2 bytes"):
        fi.build_image([-32769], 2, HASH)
    with pytest.raises(GruHwError, match="8 bytes, not 7"):
        fi.build_image([1], 1, HASH[:7])
    with pytest.raises(GruHwError, match="1 to 8 bytes, not 9"):
        fi.build_image([1], 9, HASH)
    with pytest.raises(GruHwError, match="1 to 2\\*\\*32 - 1 words, not 0"):
        fi.build_image([], 2, HASH)


def test_boot_states():
    states = [fi.BOOT_OK, fi.BOOT_LOADING, fi.BOOT_MISSING, fi.BOOT_MISMATCH, fi.BOOT_CORRUPT]
    assert states == [0, 1, 2, 3, 4]
    assert set(fi.BOOT_STATE_NAMES) == set(states)
    assert len(set(fi.BOOT_STATE_NAMES.values())) == 5
    assert fi.DEFAULT_IMAGE_OFFSET == 0x100000 > 104_090


# ---- the SPI reader and the flash model ------------------------------------------------------
def _reader_sim(image: bytes, offset: int, *, divisor=2, reader_wake=None, model_wake=0,
                asleep=True):
    m = Module()
    m.submodules.reader = rd = SPIFlashReader(clock_hz=CLOCK_HZ, divisor=divisor,
                                              wake_cycles=reader_wake)
    m.submodules.flash = fl = SPIFlashModel(image, offset, asleep=asleep,
                                            wake_cycles=model_wake)
    wiring.connect(m, rd.spi, fl.spi)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    return sim, rd, fl


class _SPIMonitor:
    """Check SPI mode 0 on the pins, a cycle at a time."""

    def __init__(self, divisor: int):
        self.hi = divisor // 2
        self.divisor = divisor
        self.prev = (0, 0, 0)
        self.high_run = 0
        self.last_rise = None
        self.rises = 0

    def step(self, ctx, spi, t: int) -> None:
        cs, clk, copi = ctx.get(spi.cs), ctx.get(spi.clk), ctx.get(spi.copi)
        pcs, pclk, pcopi = self.prev
        if cs and pcs:
            if clk and pclk:
                assert copi == pcopi, f"cycle {t}: COPI changed while SCK was high"
            if clk and not pclk:
                assert copi == pcopi, f"cycle {t}: COPI changed on a rising edge"
                if self.last_rise is not None:
                    assert t - self.last_rise >= self.divisor, f"cycle {t}: SCK too fast"
                self.last_rise = t
                self.rises += 1
        if cs and not pcs:
            assert not clk, f"cycle {t}: SCK high when CS became active"
        if not cs:
            assert not clk, f"cycle {t}: SCK high with CS inactive"
        # a stopped SCK is low
        self.high_run = self.high_run + 1 if clk else 0
        assert self.high_run <= self.hi, f"cycle {t}: SCK high for {self.high_run} cycles"
        self.prev = (cs, clk, copi)


@pytest.mark.parametrize("divisor", [2, 3])
def test_reader_reads_under_backpressure(divisor):
    """Bytes read from an offset (across the stored range's start and end) are the flash's, with
    random backpressure; SPI mode 0 timing; the first byte after ``first_byte_cycles``; stop and
    a second read elsewhere."""
    rng = random.Random(divisor)
    offset = 0x100000
    image = bytes(rng.randrange(256) for _ in range(48))
    flash = {offset + i: b for i, b in enumerate(image)}
    start1, n1 = offset - 3, 56   # 3 erased bytes, the image, 5 erased bytes
    start2, n2 = offset + 20, 12
    sim, rd, fl = _reader_sim(image, offset, divisor=divisor)
    timing = SPITiming.of(CLOCK_HZ, divisor)
    assert rd.timing == timing and timing.wake_cycles == 36 and timing.byte_cycles == 8 * divisor

    async def read(ctx, start, n, pattern, mon, t0):
        assert not ctx.get(rd.busy)
        ctx.set(rd.addr, start)
        ctx.set(rd.start, 1)
        got, t, first_valid, stalls = [], 0, None, 0
        while len(got) < n:
            mon.step(ctx, rd.spi, t0 + t)
            ready = pattern(t)
            ctx.set(rd.o_stream.ready, ready)
            if ctx.get(rd.o_stream.valid):
                if first_valid is None:
                    first_valid = t
                if ready:
                    got.append(ctx.get(rd.o_stream.payload))
                else:
                    stalls += 1
            await ctx.tick()
            ctx.set(rd.start, 0)
            t += 1
            assert t < 200 * n + 2000, "the reader stalled"
        return bytes(got), first_valid, stalls, t

    async def bench(ctx):
        assert not ctx.get(fl.awake)  # the model starts in deep power-down
        mon = _SPIMonitor(divisor)
        # 1: random ready, long stalls included (the consumer holds bytes for many SCK periods)
        ready1 = [rng.random() < 0.6 for _ in range(4096)] + [True] * 100_000
        for k in range(0, 600, 97):
            ready1[k + timing.first_byte_cycles: k + timing.first_byte_cycles + 60] = [False] * 60
        ready1[timing.first_byte_cycles] = True
        got, first, stalls, t = await read(ctx, start1, n1, lambda i: ready1[i], mon, 0)
        assert got == bytes(flash.get(a, 0xFF) for a in range(start1, start1 + n1))
        assert first == timing.first_byte_cycles
        assert stalls > 100  # the backpressure happened
        assert ctx.get(fl.awake)
        # stop: SCK low and idle the next cycle, CS inactive (at its pin register) the cycle
        # after; then read elsewhere with ready always high
        ctx.set(rd.o_stream.ready, 0)
        ctx.set(rd.stop, 1)
        await ctx.tick()
        ctx.set(rd.stop, 0)
        assert not ctx.get(rd.spi.clk) and not ctx.get(rd.busy)
        await ctx.tick()
        assert not ctx.get(rd.spi.cs)
        t += 1
        assert not ctx.get(rd.o_stream.valid)
        mon.prev = (0, 0, 0)
        mon.last_rise = None
        got, first, stalls, t2 = await read(ctx, start2, n2, lambda i: True, mon, t + 1)
        assert got == image[20:20 + n2] and first == timing.first_byte_cycles and stalls == 0
        # a byte per 8 * divisor cycles: the last byte was taken in the cycle it was valid
        assert t2 - 1 == timing.first_byte_cycles + (n2 - 1) * timing.byte_cycles

    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("model_wake, readable", [(36, True), (40, False)])
def test_reader_wakes_the_flash(model_wake, readable):
    """The reader releases the flash from deep power-down and waits tRES1 before its READ: a
    flash that needs 36 cycles (the reader's wait at 12 MHz) answers; one that needs longer is
    still asleep at the READ and reads 0xFF."""
    image = bytes(range(1, 17))
    sim, rd, fl = _reader_sim(image, 0x40, model_wake=model_wake)
    assert rd.wake_cycles == 36

    async def bench(ctx):
        ctx.set(rd.addr, 0x40)
        ctx.set(rd.start, 1)
        ctx.set(rd.o_stream.ready, 1)
        got, awake_at, t = [], None, 0
        while len(got) < 8:
            if ctx.get(fl.awake) and awake_at is None:
                awake_at = t
            if ctx.get(rd.o_stream.valid):
                got.append(ctx.get(rd.o_stream.payload))
            await ctx.tick()
            ctx.set(rd.start, 0)
            t += 1
        # 0xAB's 8 bits end after the deselect time and 8 SCK periods
        assert awake_at is not None and awake_at > 8 * 2 + model_wake
        assert bytes(got) == (image[:8] if readable else b"\xff" * 8)

    sim.add_testbench(bench)
    sim.run()


def test_awake_model_reads_and_converts():
    """A flash model out of power-down reads without waiting; model and loader convert to
    Verilog."""
    image = bytes([0x5A, 0xC3, 0x00, 0xFF, 0x81])
    sim, rd, fl = _reader_sim(image, 0xFFFFFB, asleep=False, reader_wake=1)

    async def bench(ctx):
        assert ctx.get(fl.awake)
        ctx.set(rd.addr, 0xFFFFFB)
        ctx.set(rd.start, 1)
        ctx.set(rd.o_stream.ready, 1)
        got = []
        while len(got) < 7:
            if ctx.get(rd.o_stream.valid):
                got.append(ctx.get(rd.o_stream.payload))
            await ctx.tick()
            ctx.set(rd.start, 0)
        assert bytes(got) == image + b"\xff\xff"  # the address wraps to 0: erased

    sim.add_testbench(bench)
    sim.run()
    text = verilog.convert(SPIFlashModel(image, 0x100), name="flash_model")
    assert "module flash_model" in text
    loader = FlashLoader(words=4, word_bytes=2, model_hash=HASH, base=8, addr_width=5,
                         data_width=16, clock_hz=CLOCK_HZ)
    text = verilog.convert(loader, name="flash_loader")
    assert "module flash_loader" in text and "w_stream__payload" in text


# ---- the loader -----------------------------------------------------------------------------
def _loader(words, word_bytes, data_width, *, base=0, addr_width=8, model_hash=HASH):
    return FlashLoader(words=words, word_bytes=word_bytes, model_hash=model_hash, base=base,
                       addr_width=addr_width, data_width=data_width, clock_hz=CLOCK_HZ)


def _boot(loader: FlashLoader, flash_bytes: bytes, ready, *, flash_offset=None,
          max_cycles=None):
    """Run ``loader`` against a flash holding ``flash_bytes`` at its image offset; return
    (beats taken, final state, cycle done rose). ``ready(t)``: the weight port's ready. ``done``
    must not come before the last beat was taken."""
    m = Module()
    m.submodules.loader = loader
    offset = loader.image_offset if flash_offset is None else flash_offset
    m.submodules.flash = fl = SPIFlashModel(flash_bytes, offset)
    wiring.connect(m, loader.spi, fl.spi)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    ws = loader.w_stream
    out = {}
    limit = max_cycles or loader.boot_cycles * 4 + 2000

    async def bench(ctx):
        beats, t, last_beat = [], 0, -1
        while not ctx.get(loader.done):
            assert ctx.get(loader.state) == fi.BOOT_LOADING, f"cycle {t}: state before done"
            r = ready(t)
            ctx.set(ws.ready, r)
            if r and ctx.get(ws.valid):
                beats.append((ctx.get(ws.payload.addr), ctx.get(ws.payload.data),
                              ctx.get(ws.payload.last)))
                last_beat = t
            await ctx.tick()
            t += 1
            assert t < limit, "the loader never finished"
        done_at = t
        assert done_at > last_beat
        for k in range(40):  # nothing more comes, and done and the state hold
            ctx.set(ws.ready, 1)
            assert not ctx.get(ws.valid) and ctx.get(loader.done)
            if k >= 2:  # the read stops the cycle after done; CS's pin register follows
                assert not ctx.get(loader.spi.cs)
            await ctx.tick()
        out.update(beats=beats, state=ctx.get(loader.state), done_at=done_at)

    sim.add_testbench(bench)
    sim.run()
    return out["beats"], out["state"], out["done_at"]


def _random_ready(seed: int):
    rng = random.Random(seed)
    pattern = [rng.random() < 0.3 for _ in range(200_000)]
    return lambda t: pattern[t]


@pytest.mark.parametrize("data_width, word_bytes, n, ready_kind", [
    (16, 2, 24, "random"), (16, 2, 9, "always"), (64, 8, 10, "random"), (64, 8, 6, "always"),
    (12, 2, 12, "random"), (8, 1, 20, "random"), (16, 2, 8, "stalled_end"),
])
def test_loader_writes_the_image(data_width, word_bytes, n, ready_kind):
    """The beats are (base + i, word i), last on the final one; state OK; done on time, and
    not before the last word was taken (``stalled_end``: the port is not ready for a long
    time from just before the last word until long after the CRC)."""
    rng = np.random.default_rng(data_width * 100 + n)
    words = _words(rng, n, data_width)
    base = 5
    loader = _loader(n, word_bytes, data_width, base=base, addr_width=7 if n < 100 else 12)
    image = fi.build_image(words, word_bytes, HASH)
    # the port stalls from just before the last word (its last byte: 2 bytes before the end)
    stall_from = loader.boot_cycles - 2 - 2 * loader.byte_cycles - 8
    stall_to = loader.boot_cycles + 300
    ready = {"always": lambda t: True, "random": _random_ready(n),
             "stalled_end": lambda t: not stall_from <= t < stall_to}[ready_kind]
    beats, state, done_at = _boot(loader, image, ready)
    assert state == fi.BOOT_OK
    assert beats == [(base + i, w, int(i == n - 1)) for i, w in enumerate(words)]
    assert any(w < 0 for w in words)
    if ready_kind == "stalled_end":
        assert done_at == stall_to + 2  # the last word taken at stall_to, CHECK, done
    if ready_kind == "always":
        assert done_at == loader.boot_cycles
        assert loader.byte_cycles == 16


def test_loader_erased_flash_is_missing():
    """An erased flash (0xFF) and a flash without the magic: BOOT_MISSING, no word written."""
    loader = _loader(8, 2, 16)
    beats, state, done_at = _boot(loader, b"\xff" * 64, lambda t: True)
    assert (beats, state) == ([], fi.BOOT_MISSING)
    # decided after the 4 magic bytes
    assert done_at == loader.timing.first_byte_cycles + 3 * loader.byte_cycles + 2  # the byte, DECIDE, done
    image = bytearray(fi.build_image(list(range(8)), 2, HASH))
    image[2] ^= 0x04
    beats, state, _ = _boot(_loader(8, 2, 16), bytes(image), lambda t: True)
    assert (beats, state) == ([], fi.BOOT_MISSING)
    # an image elsewhere in the flash is not the image
    good = fi.build_image(list(range(8)), 2, HASH)
    beats, state, _ = _boot(_loader(8, 2, 16), good, lambda t: True,
                            flash_offset=fi.DEFAULT_IMAGE_OFFSET + 1)
    assert (beats, state) == ([], fi.BOOT_MISSING)


@pytest.mark.parametrize("kind", ["hash", "words", "word_bytes", "version"])
def test_loader_foreign_image_is_mismatch(kind):
    """An image for another build (model hash, word count, word size, format version):
    BOOT_MISMATCH, no word written."""
    words = [3, -1, 7, -8, 100, -100]
    if kind == "hash":
        image = fi.build_image(words, 2, OTHER_HASH)
    elif kind == "words":
        image = fi.build_image(words + [1], 2, HASH)
    elif kind == "word_bytes":
        image = fi.build_image(words, 3, HASH)
    else:
        image = bytearray(fi.build_image(words, 2, HASH))
        image[4] = fi.IMAGE_VERSION + 1
        end = 18 + 2 * len(words)
        image = bytes(image[:end]) + crc16(bytes(image[4:end])).to_bytes(2, "big")
    loader = _loader(len(words), 2, 16)
    beats, state, done_at = _boot(loader, image, _random_ready(3))
    assert (beats, state) == ([], fi.BOOT_MISMATCH)
    assert done_at == loader.timing.first_byte_cycles + 17 * loader.byte_cycles + 2  # the byte, DECIDE, done
    # the same loader takes the right image
    beats, state, _ = _boot(_loader(len(words), 2, 16), fi.build_image(words, 2, HASH),
                            _random_ready(4))
    assert state == fi.BOOT_OK and [d for _, d, _ in beats] == words


@pytest.mark.parametrize("where", ["payload", "crc"])
def test_loader_corrupt_image(where):
    """One flipped bit in a word or in the CRC: BOOT_CORRUPT; the words were written (the
    flipped one as read), the state says so. (Every header byte is compared: a flipped header
    bit is a mismatch, see above.)"""
    rng = np.random.default_rng(9)
    words = _words(rng, 10, 16)
    image = bytearray(fi.build_image(words, 2, HASH))
    expected = list(words)
    if where == "payload":
        image[18 + 7] ^= 0x20  # word 3's high byte: its bit 13
        v = (words[3] & 0xFFFF) ^ 0x2000
        expected[3] = v - (1 << 16) if v >> 15 else v
    else:
        image[-2] ^= 0x20
    beats, state, _ = _boot(_loader(10, 2, 16, base=2), bytes(image), _random_ready(5))
    assert state == fi.BOOT_CORRUPT
    assert beats == [(2 + i, w, int(i == 9)) for i, w in enumerate(expected)]
    assert (expected == words) == (where == "crc")


def test_loader_checks_its_parameters():
    with pytest.raises(ValueError, match="do not fit a 4-bit weight port"):
        _loader(10, 2, 16, base=8, addr_width=4)
    with pytest.raises(GruHwError, match="8 bytes, not 3"):
        _loader(10, 2, 16, model_hash=b"abc")
    with pytest.raises(ValueError, match="does not fit a 16 MiB flash"):
        FlashLoader(words=10, word_bytes=2, model_hash=HASH, base=0, addr_width=8,
                    data_width=16, clock_hz=CLOCK_HZ, image_offset=(1 << 24) - 20)
    with pytest.raises(ValueError, match="at least 2"):
        SPIFlashReader(clock_hz=CLOCK_HZ, divisor=1)
    with pytest.raises(ValueError, match="not 16 bytes at 0xfffff8"):
        SPIFlashModel(bytes(16), 0xFFFFF8)
    with pytest.raises(ValueError, match="not 0 bytes"):
        SPIFlashModel(b"")
    # the defaults: tRES1 and the deselect time from the clock
    t = SPITiming.of(42e6)
    assert (t.divisor, t.deselect_cycles, t.wake_cycles, t.byte_cycles) == (2, 5, 126, 16)
