"""The board top: the GRU core behind the UART link (:mod:`gru_hw.protocol`), PLL and LEDs."""


from amaranth import Cat, ClockDomain, Const, Elaboratable, Module, Mux, ResetInserter, Signal
from amaranth.build import Subsignal
from amaranth.build import ResourceError
from amaranth.lib import io, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .. import protocol as proto
from ..config import CoreConfig
from ..errors import GruHwError
from . import Board
from ..flash_image import BOOT_OK, DEFAULT_IMAGE_OFFSET, build_image
from .flash import FlashLoader, spi_pins_signature
from .link import FrameReceiver, ReplySender, RequestExecutor, WeightWindow, reply_sources
from .family import core_config_for
from .uart import UARTReceiver, UARTTransmitter, uart_divisor

DEFAULT_BUFFER_BYTES = 2048


def default_max_steps(qm, streams: int = 1) -> int:
    """Return the longest sequence a RUN frame takes: a 2 KiB request buffer (with ``streams``
    > 1 it holds the stream id too), at most 1024 steps."""
    step = qm.input_size * proto.byte_width(qm.spec.x_fmt.width)
    prefix = proto.STREAM_ID_BYTES if streams > 1 else 0
    return max(1, min(1024, (DEFAULT_BUFFER_BYTES - prefix) // step))


def make_core(qm, lanes: int, config: CoreConfig | None = None, runtime_weights: bool = False,
              streams: int = 1):
    """Return the GRUCore for a board (and its name, for the report).

    ``config`` is the board's core configuration (:func:`gru_hw.boards.family.core_config_for`:
    the family's profile for the device's hard multipliers); without it, the default ("dsp")
    profile. ``runtime_weights`` and ``streams`` (without ``config``): the weight port, and S.
    """
    from ..gateware import GRUCore

    config = config or CoreConfig(qm, lanes, "dsp", runtime_weights=runtime_weights,
                                  streams=streams)
    extra = ", runtime weights" if config.runtime_weights else ""
    if config.streams > 1:
        extra += f", {config.streams} streams"
    return GRUCore(config), f"GRUCore (profile {config.profile.name}{extra})"


class LinkTop(wiring.Component):
    """The GRU core behind the framed UART protocol of :mod:`gru_hw.protocol`.

    Ports:
        rx    In(1): serial line from the host (8N1, ``divisor`` clocks per bit).
        tx    Out(1): serial line to the host.
        leds  Out(4): heartbeat, busy (a RUN or WEIGHTS in progress, or the weights loading from
              flash), error (the last request was refused; steady when the weights did not load
              from flash), activity (bytes received recently); registered.
        flash Out(:func:`~gru_hw.boards.flash.spi_pins_signature`) (SPRAM builds only): the SPI
              configuration flash, from which :attr:`loader` (a
              :class:`~gru_hw.boards.flash.FlashLoader`) loads the weight image at
              ``image_offset`` after reset; RUN is refused until it loaded with a good CRC.

    A core with S > 1 streams (``config.streams``, or a custom core's ``streams``) makes a board
    whose descriptor announces S and whose RUN, RUN_KEEP and RESET_STATE carry a stream id
    (:mod:`gru_hw.protocol`); the request buffer holds the id too.

    Only wiring: UART receiver -> :class:`~gru_hw.boards.link.FrameReceiver` (the payload into a
    ``max_steps`` x step-bytes RAM) -> :class:`~gru_hw.boards.link.RequestExecutor` (checks the
    frame, drives the core) -> :class:`~gru_hw.boards.link.ReplySender` -> UART transmitter. A
    request is buffered whole and checked (CRC, command, length, address) before anything is done,
    so a refused frame changes nothing. A frame that stops arriving for ``timeout_cycles`` is
    refused with a timeout error.

    Latency of a RUN: the frame's bytes, then the core's latency, then the reply's bytes.
    Throughput: one request at a time; the core sees a step per ``step_bytes + 2`` clocks at most.
    """

    def __init__(self, qm, lanes: int, *, core=None, divisor: int, timeout_cycles: int,
                 clock_hz: int, max_steps: int | None = None, heartbeat_log2: int = 24,
                 stretch_log2: int = 20, config: CoreConfig | None = None,
                 runtime_weights: bool = False, image_offset: int = DEFAULT_IMAGE_OFFSET,
                 spi_divisor: int = 2) -> None:
        self.qm = qm
        self.lanes = lanes
        self.core, self.core_kind = ((core, "custom") if core is not None
                                     else make_core(qm, lanes, config, runtime_weights))
        self.runtime_weights = bool(getattr(self.core, "runtime_weights", False))
        core_config = getattr(self.core, "config", None)
        #: where the weights are: "spram" boots them from the SPI flash (:attr:`loader`)
        self.weight_memory = core_config.weight_memory if core_config is not None else "bram"
        #: the core's interleaved streams (S)
        self.streams = int(core_config.streams if core_config is not None
                           else getattr(self.core, "streams", 1))
        self.divisor = divisor
        self.timeout_cycles = timeout_cycles
        self.clock_hz = clock_hz
        self.max_steps = (max_steps if max_steps is not None
                          else default_max_steps(qm, self.streams))
        self.descriptor = proto.BoardDescriptor.for_model(
            qm, lanes=lanes, max_steps=max(1, self.max_steps), clock_hz=clock_hz,
            runtime_weights=self.runtime_weights, weight_memory=self.weight_memory,
            streams=self.streams)
        self.image_offset = image_offset
        self.loader = None
        members = {"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(4)}
        if self.weight_memory == "spram":
            mm = self.core.memory_map
            words = mm.boot_image()
            self.loader = FlashLoader(
                words=len(words), word_bytes=mm.word_bytes, model_hash=self.descriptor.model_hash,
                base=0, addr_width=mm.addr_width, data_width=mm.data_width, clock_hz=clock_hz,
                image_offset=image_offset, divisor=spi_divisor,
                region_words=mm.weight_depth, offset_bits=mm.offset_bits)
            members["flash"] = Out(spi_pins_signature())
        d = self.descriptor
        most = (proto.MAX_PAYLOAD - d.stream_bytes) // d.step_bytes
        if not 1 <= self.max_steps <= most:
            raise GruHwError(f"max_steps must be within 1..{most} (a RUN frame of {most} steps "
                             f"of {d.step_bytes} bytes fills the 16-bit length), got "
                             f"{self.max_steps}", subject="max_steps")
        self.heartbeat_log2 = heartbeat_log2
        self.stretch_log2 = stretch_log2
        super().__init__(members)

    def flash_image(self) -> bytes:
        """Return the weight image this board loads from its flash (SPRAM builds)."""
        if self.loader is None:
            raise GruHwError("this build keeps its weights in block RAM: it has no flash image")
        mm = self.core.memory_map
        return build_image(mm.boot_image(), mm.word_bytes, self.descriptor.model_hash)

    def elaborate(self, platform) -> Module:
        m = Module()
        d, core = self.descriptor, self.core
        max_len = d.stream_bytes + self.max_steps * d.step_bytes  # the stream id, the steps
        window = (WeightWindow.of_map(core.memory_map, d.weight_bytes) if self.runtime_weights
                  else None)

        m.submodules.uart_rx = urx = UARTReceiver(self.divisor)
        m.submodules.uart_tx = utx = UARTTransmitter(self.divisor)
        m.submodules.buf = buf = memory.Memory(shape=8, depth=max_len, init=[])
        m.submodules.receiver = rx = FrameReceiver(
            max_len=max_len, step_bytes=d.step_bytes, timeout_cycles=self.timeout_cycles,
            window=window, stream_id=d.streams > 1)
        m.submodules.executor = ex = RequestExecutor(
            d, max_len=max_len, window=window,
            x_stream=stream.Signature(core.i_stream.payload.shape()),
            y_stream=stream.Signature(core.o_stream.payload.shape()),
            w_stream=(stream.Signature(core.w_stream.payload.shape()) if window else None))
        m.submodules.sender = tx = ReplySender(reply_sources(d))
        # the core's reset is registered (core_rst): it fans out to every register of the core
        m.submodules.core = ResetInserter(ex.core_rst)(core)

        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        wiring.connect(m, urx.o_stream, rx.i_stream)
        wiring.connect(m, rx.buf_w, buf.write_port())
        wiring.connect(m, ex.buf_r, buf.read_port(transparent_for=()))
        wiring.connect(m, rx.frame, ex.frame)
        wiring.connect(m, ex.reply, tx.reply)
        wiring.connect(m, tx.o_stream, utx.i_stream)
        wiring.connect(m, ex.x_stream, core.i_stream)
        wiring.connect(m, core.o_stream, ex.y_stream)
        boot_failed = Const(0)
        if self.loader is not None:
            m.submodules.loader = ld = self.loader
            wiring.connect(m, wiring.flipped(self.flash), ld.spi)
            m.d.comb += ex.boot_state.eq(ld.state)
            boot_failed = ld.done & (ld.state != BOOT_OK)
            # the loader owns the core's weight port until it is done, then WEIGHTS frames
            cw, lw = core.w_stream, ld.w_stream
            if window is not None:
                ew = ex.w_stream
                m.d.comb += [cw.valid.eq(Mux(ld.done, ew.valid, lw.valid)),
                             cw.payload.eq(Mux(ld.done, ew.payload, lw.payload)),
                             lw.ready.eq(~ld.done & cw.ready), ew.ready.eq(ld.done & cw.ready)]
            else:
                wiring.connect(m, lw, cw)
        elif window is not None:
            wiring.connect(m, ex.w_stream, core.w_stream)

        # ---- LEDs ----
        beat = Signal(self.heartbeat_log2)
        m.d.sync += beat.eq(beat + 1)
        stretch = Signal(self.stretch_log2)
        with m.If(urx.o_stream.valid):
            m.d.sync += stretch.eq(-1)
        with m.Elif(stretch != 0):
            m.d.sync += stretch.eq(stretch - 1)
        # error: the last request was refused, or the weights did not load from flash (steady)
        loading = ~self.loader.done if self.loader is not None else Const(0)
        m.d.sync += self.leds.eq(Cat(beat[-1], ex.busy | loading, ex.error | boot_failed,
                                     (stretch != 0) | rx.active))
        return m


class BoardTop(Elaboratable):
    """A whole board: PLL-driven ``sync`` domain, :class:`LinkTop` on the board's UART, LEDs.

    ``clock_mhz`` is what the PLL is asked for (default: the board's); :attr:`clock_mhz` is what
    it makes. ``baud`` sets the UART (8N1). Without a platform (simulation) the PLL is skipped:
    drive :attr:`rx`, watch :attr:`tx`, and use ``divisor`` / ``timeout_cycles`` as given;
    without a board, ``profile`` picks the core's profile (default "dsp").
    ``weight_memory="spram"``: the weights boot from the SPI flash at ``image_offset``.
    ``streams`` S > 1: the core keeps S hidden states, one per stream (RUN names its stream).
    """

    def __init__(self, qm, lanes: int, board: Board | None, *, clock_mhz: float | None = None,
                 baud: int = proto.DEFAULT_BAUD, core=None, max_steps: int | None = None,
                 timeout_ms: float = 50.0, divisor: int | None = None,
                 timeout_cycles: int | None = None, clock_not_above: bool = False,
                 runtime_weights: bool = False, weight_memory: str = "bram",
                 image_offset: int = DEFAULT_IMAGE_OFFSET, profile=None,
                 tail_width: int | None = None, streams: int = 1) -> None:
        self.board = board
        if board is not None:
            want = clock_mhz if clock_mhz is not None else board.default_clock_mhz
            self.pll = board.family.pll_domain(None, board.clock_in_mhz, want,
                                               not_above=clock_not_above)
            self.clock_mhz = self.pll.fout_mhz
        else:
            self.pll = None
            self.clock_mhz = clock_mhz if clock_mhz is not None else 12.0
        hz = self.clock_mhz * 1e6
        self.baud = baud
        div = divisor if divisor is not None else uart_divisor(hz, baud)
        tmo = timeout_cycles if timeout_cycles is not None else int(hz * timeout_ms / 1e3)
        log2 = max(4, int(hz).bit_length() - 1)
        self.link = LinkTop(qm, lanes, core=core, divisor=div, timeout_cycles=tmo,
                            clock_hz=int(round(hz)), max_steps=max_steps,
                            heartbeat_log2=log2, stretch_log2=max(2, log2 - 4),
                            config=self._config(qm, lanes, board, core, runtime_weights,
                                                weight_memory, profile, tail_width, streams),
                            runtime_weights=runtime_weights, image_offset=image_offset)
        self.rx = self.link.rx
        self.tx = self.link.tx

    @staticmethod
    def _config(qm, lanes, board, core, runtime_weights, weight_memory, profile, tail_width,
                streams=1):
        """The core's configuration: the board's; without a board (simulation) ``profile``
        (default "dsp"), and SPRAM as an Amaranth memory (the simulator cannot run the cell)."""
        if core is not None:
            return None
        if board is not None:
            return core_config_for(qm, board, lanes, runtime_weights=runtime_weights,
                                   weight_memory=weight_memory, tail_width=tail_width,
                                   streams=streams, synthesis=True)
        return CoreConfig(qm, lanes, profile, runtime_weights=runtime_weights,
                          weight_memory=weight_memory, spram_cells=False, streams=streams)

    @property
    def core(self):
        """The GRU core (or stand-in) inside."""
        return self.link.core

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.link = self.link
        if platform is None:
            return m
        board = self.board
        self.pll.clk_port = platform.request(platform.default_clk, dir="-")
        m.domains.sync = ClockDomain("sync")
        m.submodules.pll = self.pll
        if board.extra_resources:
            platform.add_resources(list(board.extra_resources))
        res = platform.lookup("uart", 0)
        uart = platform.request("uart", 0, dir={sub.name: "-" for sub in res.ios
                                                if isinstance(sub, Subsignal)})
        m.submodules.uart_rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [self.link.rx.eq(rx_buf.i), tx_buf.o.eq(self.link.tx)]
        if self.link.loader is not None:
            self._flash_pins(m, platform)
        leds = []
        for i in range(4):
            try:
                leds.append(platform.request("led", i, dir="-"))
            except ResourceError:  # fewer LEDs on this board
                break
        if not leds:
            rgb = platform.request("rgb_led", 0, dir={"r": "-", "g": "-", "b": "-"})
            leds = [rgb.g, rgb.b, rgb.r]  # heartbeat green, busy blue, error red
        for i, port in enumerate(leds):
            m.submodules[f"led_buf{i}"] = buf = io.Buffer("o", port)
            m.d.comb += buf.o.eq(self.link.leds[i])
        return m

    def _flash_pins(self, m: Module, platform) -> None:
        """Connect the link's flash port to the board's SPI configuration flash (1x mode)."""
        res = platform.lookup("spi_flash_1x", 0)
        pins = platform.request("spi_flash_1x", 0, dir={sub.name: "-" for sub in res.ios
                                                        if isinstance(sub, Subsignal)})
        fl = self.link.flash
        for name in ("cs", "clk", "copi"):
            m.submodules[f"flash_{name}_buf"] = buf = io.Buffer("o", getattr(pins, name))
            m.d.comb += buf.o.eq(getattr(fl, name))
        m.submodules.flash_cipo_buf = buf = io.Buffer("i", pins.cipo)
        m.d.comb += fl.cipo.eq(buf.i)
