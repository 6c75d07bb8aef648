"""The board's end of the UART link (:mod:`gru_hw.protocol`): frame receiver, executor, sender.

    UART bytes -> FrameReceiver -> frame (+ payload in the buffer) -> RequestExecutor -> core
                                                                             |
    UART bytes <-------------------- ReplySender <---------- reply ----------+

:class:`FrameReceiver` takes one request frame at a time (payload into the request buffer, CRC,
timeout) and holds it until the executor releases it; :class:`RequestExecutor` checks it and runs
it against the core's streams; :class:`ReplySender` frames the reply. ``LinkTop``
(:mod:`gru_hw.boards.top`) wires them to the UART, the buffer and the core.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .. import protocol as proto


# ---- CRC-16 ------------------------------------------------------------------------------------
def add_crc16(m: Module, name: str, restart):
    """Add an ``amaranth.lib.crc`` Processor of the link's CRC-16 to ``m``; return it.

    ``restart`` sets the register back to the initial value. It is the Processor's reset
    (``ResetInserter``), not its ``start`` input: the link never restarts and adds a byte in the
    same cycle, and ``start`` puts a multiplexer in front of every XOR tree (on the iCE40 UP5K
    the register and its residue test take 52 LUTs with ``start``, 42 this way).
    The Processor takes a byte per cycle on ``valid``/``data``; ``crc`` follows one cycle later.
    """
    crc = proto.crc16_parameters.create()
    m.submodules[name] = ResetInserter(restart)(crc)
    return crc


def crc_step(parameters, value, word):
    """Return the CRC register ``value`` after one more ``word``: one step of ``parameters``.

    This is the XOR network ``amaranth.lib.crc.Processor`` builds, for a register a Processor
    cannot hold: the weights checksum starts at power-up from the checksum of the built-in
    weights, not from the algorithm's initial value. Taken from ``parameters.compute`` (the CRC is
    linear: each bit of the result is the XOR of some bits of ``value`` and ``word``).
    """
    algo = parameters.algorithm
    if algo.reflect_input:
        raise ValueError("crc_step takes a CRC without input reflection")
    n, w = algo.crc_width, parameters.data_width
    algo.reflect_output, algo.xor_output = False, 0

    def column(init: int, word_in: int) -> int:
        algo.initial_crc = init
        return algo(w).compute([word_in])

    terms = ([(column(1 << j, 0), value[j]) for j in range(n)] +
             [(column(0, 1 << j), word[j]) for j in range(w)])
    bits = []
    for i in range(n):
        bit = Const(0, 1)
        for mask, x in terms:
            if mask >> i & 1:
                bit = bit ^ x
        bits.append(bit)
    return Cat(*bits)


# ---- what a WEIGHTS frame may address ----------------------------------------------------------
@dataclass(frozen=True)
class WeightWindow:
    """The core's weight port as WEIGHTS frames see it: word size and address map.

    An address is ``region << offset_bits | offset``: regions ``0 .. bias_region - 1`` hold
    ``depth`` words each (one per lane, or the packed rows of an SPRAM build), region
    ``bias_region`` the ``bias_rows`` bias words.
    """

    word_bytes: int   #: bytes per word on the link
    addr_width: int
    offset_bits: int
    lanes: int
    depth: int
    bias_rows: int
    bias_region: int

    @classmethod
    def of_map(cls, memory_map, word_bytes: int) -> "WeightWindow":
        """Return the window of a weight port (:class:`gru_hw.memory_map.MemoryMap`) whose words
        take ``word_bytes`` bytes on the link (the descriptor's ``weight_bytes``)."""
        mm = memory_map
        return cls(word_bytes, mm.addr_width, mm.offset_bits, mm.lanes, mm.weight_depth,
                   mm.schedule.bias_rows, mm.bias_region)


# ---- interfaces between the three ------------------------------------------------------------
class FrameSignature(wiring.Signature):
    """A request frame, from the receiver's side (the executor's is ``flipped``).

    Members:
        done         Out(1): the frame's last byte arrived (a pulse). The members below describe
                     the frame from the next cycle until ``release``.
        timeout      Out(1): the frame stopped arriving (a pulse); ``code`` is what arrived of it
                     (0 before its code byte).
        code         Out(8), length Out(16): the frame's header.
        crc_ok       Out(1): the CRC matches.
        whole_steps  Out(1): the payload is a whole number of RUN steps ...
        steps_m1     Out(17): ... of which there are ``steps_m1 + 1``.
        w_start, w_high, w_words, whole_words (run-time weights only): a WEIGHTS frame's start
                     address (its low ``addr_width`` bits, and whether any higher bit is set) and
                     its words (whether the payload after the address is whole words, and how many).
        stream       Out(8) (boards with several streams only): the payload's first byte, the
                     stream id of a RUN, RUN_KEEP or one-stream RESET_STATE; the steps
                     (``whole_steps``, ``steps_m1``) are then counted from the second byte.
        release      In(1): the frame is handled; the receiver looks for the next one.
    """

    def __init__(self, max_len: int, window: WeightWindow | None = None,
                 stream_id: bool = False) -> None:
        members = {
            "done": Out(1), "timeout": Out(1), "code": Out(8), "length": Out(16),
            "crc_ok": Out(1), "whole_steps": Out(1), "steps_m1": Out(17), "release": In(1),
        }
        if window is not None:
            members.update({"w_start": Out(window.addr_width), "w_high": Out(1),
                            "w_words": Out(range(max_len // window.word_bytes + 2)),
                            "whole_words": Out(1)})
        if stream_id:
            members["stream"] = Out(8)
        super().__init__(members)

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.members == other.members

    __hash__ = None


def reply_sources(descriptor: proto.BoardDescriptor) -> data.StructLayout:
    """Return the layout of the executor's reply sources for a board answering ``descriptor``.

    ``error``: error and command; ``desc``: the IDENTIFY descriptor; ``zero``: nothing;
    ``result``: the outputs and cycle count; ``wcrc``: the weights checksum. Each is sent least
    significant byte first.
    """
    return data.StructLayout({
        "error": 8 * proto.ERROR_PAYLOAD_BYTES, "desc": 8 * descriptor.descriptor_bytes, "zero": 1,
        "result": 8 * descriptor.result_bytes, "wcrc": 8 * proto.WEIGHTS_REPLY_BYTES})


class ReplySignature(wiring.Signature):
    """A reply to send, from the requester's side (the sender's is ``flipped``).

    Members:
        start    Out(1): a pulse: send a reply of ``code``, ``length`` bytes taken from the
                 source ``select`` names (one-hot). All three are sampled with ``start``.
        code     Out(8), length Out(16), select Out(one bit per source).
        sources  Out(layout): the payload sources; the selected one must hold until ``done``.
        done     In(1): a pulse: the reply's last byte went to the UART.
    """

    def __init__(self, sources: data.StructLayout) -> None:
        self.sources = sources
        super().__init__({
            "start": Out(1), "code": Out(8), "length": Out(16),
            "select": Out(data.StructLayout({name: 1 for name, _ in sources})),
            "sources": Out(sources), "done": In(1),
        })

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.sources == other.sources

    __hash__ = None


# ---- the frame receiver ------------------------------------------------------------------------
class FrameReceiver(wiring.Component):
    """Receive request frames: SYNC, code, length, payload into the buffer, CRC; time out.

    Ports:
        i_stream  In(stream.Signature(8)): bytes from the UART; always ready. Bytes before a SYNC
                  and bytes that arrive while a frame is held (after ``done`` or ``timeout``,
                  until ``release``) are dropped.
        buf_w     In(memory.WritePort.Signature(...)): drives the request buffer's write port:
                  payload byte i goes to address i (only the first ``max_len``).
        frame     Out(:class:`FrameSignature`): the frame, and its release.
        active    Out(1): between a frame's SYNC and its last byte (or its timeout).

    ``stream_id`` (boards with several streams): the payload's first byte is a stream id
    (``frame.stream``; it goes to the buffer too, at address 0) and RUN steps start after it.

    The CRC register (an ``amaranth.lib.crc`` Processor) takes the CRC bytes too: the frame is
    intact when it ends at the residue, 0 (``crc_ok``).

    Latency: ``frame.done`` is high in the cycle the last byte arrives; ``crc_ok`` and the
    payload facts are valid from the next cycle. ``frame.timeout`` comes ``timeout_cycles + 2``
    cycles after the last byte that arrived. Throughput: a byte per cycle within a frame; one
    frame at a time (the next SYNC is looked for from the cycle after ``release``).
    """

    #: ``frame.timeout`` comes this many cycles after ``timeout_cycles`` without a byte
    TIMEOUT_LATENCY = 2

    def __init__(self, *, max_len: int, step_bytes: int, timeout_cycles: int,
                 window: WeightWindow | None = None, stream_id: bool = False) -> None:
        self.max_len = max_len
        self.step_bytes = step_bytes
        self.timeout_cycles = timeout_cycles
        self.window = window
        self.stream_id = stream_id
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "buf_w": In(memory.WritePort.Signature(addr_width=ceil_log2(max_len), shape=8)),
            "frame": Out(FrameSignature(max_len, window, stream_id)),
            "active": Out(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        f = self.frame
        byte, got = self.i_stream.payload, self.i_stream.valid
        m.d.comb += self.i_stream.ready.eq(1)
        r = _ReceiverState(self.step_bytes, self.timeout_cycles, self.window)
        sync_byte = Signal()  # a SYNC byte while looking for a frame: the CRC restarts
        crc = add_crc16(m, "crc", sync_byte)
        m.d.comb += [crc.valid.eq(self.active & got), crc.data.eq(byte),
                     f.code.eq(r.code), f.length.eq(r.length), f.crc_ok.eq(crc.match_detected),
                     f.whole_steps.eq(r.step_byte == 0), f.steps_m1.eq(r.steps_m1),
                     self.buf_w.addr.eq(r.count), self.buf_w.data.eq(byte)]
        if self.window is not None:
            m.d.comb += f.whole_words.eq(r.w_byte == 0)
        m.d.sync += r.timed_out.eq((r.timer == self.timeout_cycles) & ~got)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += sync_byte.eq(got & (byte == proto.SYNC))
                with m.If(sync_byte):
                    m.d.sync += [r.code.eq(0), r.timer.eq(0)]
                    m.next = "CODE"
            for state in ("CODE", "LEN0", "LEN1", "PAYLOAD", "CRC0", "CRC1"):
                with m.State(state):
                    m.d.comb += self.active.eq(1)
                    with m.If(got):
                        m.d.sync += r.timer.eq(0)
                        self._take(m, state, byte, r)
                    with m.Elif(r.timed_out):
                        m.d.comb += f.timeout.eq(1)
                        m.next = "HOLD"
                    with m.Else():
                        m.d.sync += r.timer.eq(r.timer + 1)
            with m.State("HOLD"):
                with m.If(f.release):
                    m.next = "IDLE"
        return m

    def _take(self, m: Module, state: str, byte, r: "_ReceiverState") -> None:
        """Take a frame's byte in ``state`` (the FSM's): store it, count it, go on."""
        if state == "CODE":
            m.d.sync += r.code.eq(byte)
            m.next = "LEN0"
        elif state == "LEN0":
            m.d.sync += r.length[:8].eq(byte)
            m.next = "LEN1"
        elif state == "LEN1":
            length = Cat(r.length[:8], byte)
            m.d.sync += [r.length[8:].eq(byte), r.count.eq(0), r.step_byte.eq(0),
                         r.steps_m1.eq(-1), r.length_m1.eq(length - 1)]
            if self.window is not None:
                f = self.frame
                m.d.sync += [r.w_byte.eq(0), f.w_words.eq(0), f.w_high.eq(0)]
            with m.If(length == 0):
                m.next = "CRC0"
            with m.Else():
                m.next = "PAYLOAD"
        elif state == "PAYLOAD":
            m.d.comb += self.buf_w.en.eq(r.count < self.max_len)
            m.d.sync += r.count.eq(r.count + 1)
            if self.window is not None:
                self._take_weights(m, byte, r)
            if self.stream_id:  # the stream id first; the steps after it
                with m.If(r.count == 0):
                    m.d.sync += self.frame.stream.eq(byte)
                with m.Else():
                    self._count_steps(m, r)
            else:
                self._count_steps(m, r)
            with m.If(r.count == r.length_m1):
                m.next = "CRC0"
        elif state == "CRC0":
            m.next = "CRC1"
        else:  # CRC1: the last byte
            m.d.comb += self.frame.done.eq(1)
            m.next = "HOLD"

    def _count_steps(self, m: Module, r: "_ReceiverState") -> None:
        """Count a payload byte of RUN steps."""
        with m.If(r.step_byte == self.step_bytes - 1):
            m.d.sync += [r.step_byte.eq(0), r.steps_m1.eq(r.steps_m1 + 1)]
        with m.Else():
            m.d.sync += r.step_byte.eq(r.step_byte + 1)

    def _take_weights(self, m: Module, byte, r: "_ReceiverState") -> None:
        """Take a WEIGHTS payload byte: the start address, then count words."""
        win, f = self.window, self.frame
        aw = win.addr_width
        with m.Switch(r.count):
            for i in range(proto.WEIGHTS_ADDRESS_BYTES):
                with m.Case(i):
                    lo, hi = 8 * i, min(8 * i + 8, aw)
                    if hi > lo:
                        m.d.sync += f.w_start[lo:hi].eq(byte[:hi - lo])
                    if 8 * i + 8 > aw:
                        with m.If(byte[max(0, aw - 8 * i):].any()):
                            m.d.sync += f.w_high.eq(1)
            with m.Default():
                with m.If(r.w_byte == win.word_bytes - 1):
                    m.d.sync += [r.w_byte.eq(0), f.w_words.eq(f.w_words + 1)]
                with m.Else():
                    m.d.sync += r.w_byte.eq(r.w_byte + 1)


class _ReceiverState:
    """The frame receiver's registers."""

    def __init__(self, step_bytes: int, timeout_cycles: int, window: WeightWindow | None) -> None:
        self.code = Signal(8)
        self.length = Signal(16)
        self.length_m1 = Signal(16)  # length - 1, for the end-of-payload test
        self.count = Signal(16)      # payload bytes so far
        self.step_byte = Signal(range(step_bytes))
        self.steps_m1 = Signal(17)   # whole steps so far - 1
        self.timer = Signal(range(timeout_cycles + 2))
        # timer == timeout_cycles, registered (so a timeout acts one cycle later); not set in a
        # cycle that receives a byte (that restarts the timer)
        self.timed_out = Signal()
        if window is not None:
            self.w_byte = Signal(range(max(window.word_bytes, 2)))  # byte within a word


# ---- the reply sender --------------------------------------------------------------------------
class ReplySender(wiring.Component):
    """Send reply frames: SYNC, code, length, the payload from a source, CRC.

    Ports:
        reply     In(:class:`ReplySignature`): the reply to send, and ``done`` when it is sent.
        o_stream  Out(stream.Signature(8)): bytes to the UART.

    The sender runs on one-hot registered stages, so that the enables of its wide registers (the
    payload shift register, the byte counter, the CRC) are registered bits, not the requester's
    state decode: ``start`` -> r_start (code, length and source registered) -> r_init (payload
    loaded, counter and CRC reset) -> per byte: t_st0 (the counter decoded into flags), t_st1
    (the byte picked; the payload shifted), t_st2 (the byte offered; the CRC, an
    ``amaranth.lib.crc`` Processor, takes it when accepted).

    Latency: the first byte is offered 5 cycles after ``start``; ``done`` comes the cycle after the
    last byte is accepted. Throughput: a byte every 3 cycles at most (the UART takes one per 10 bit
    times, so the stages are hidden); one reply at a time (``start`` only when idle).
    """

    #: cycles from ``start`` to the first byte offered on ``o_stream``
    LATENCY = 5
    #: cycles from a byte's acceptance to the next byte offered (``done`` follows the last by 1)
    BYTE_CYCLES = 3

    def __init__(self, sources: data.StructLayout) -> None:
        self.sources = sources
        self.payload_bytes = max((field.width + 7) // 8 for _, field in sources)
        super().__init__({
            "reply": In(ReplySignature(sources)),
            "o_stream": Out(stream.Signature(8)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        rq = self.reply
        rcode = Signal(8)
        rlen = Signal(16)
        sel = Signal.like(rq.select)
        sh = Signal(8 * self.payload_bytes)  # the payload, shifted out a byte at a time
        ti = Signal(17)  # the byte being sent: SYNC is 0
        rend = Signal(17)  # rlen + 4: the first CRC byte
        tb = Signal(8)
        r_start, r_init = Signal(), Signal()
        t_st0, t_st1, t_st2 = Signal(), Signal(), Signal()
        t_hdr, t_data, t_chi, t_crc, t_end = (Signal(name=n) for n in
                                              ("t_hdr", "t_data", "t_chi", "t_crc", "t_end"))
        accepted = self.o_stream.valid & self.o_stream.ready
        crc = add_crc16(m, "crc", r_init)
        m.d.comb += [self.o_stream.valid.eq(t_st2), self.o_stream.payload.eq(tb),
                     crc.valid.eq(accepted & t_crc), crc.data.eq(tb)]

        m.d.sync += [r_start.eq(rq.start), r_init.eq(r_start), rq.done.eq(0)]
        with m.If(rq.start):
            m.d.sync += [rcode.eq(rq.code), rlen.eq(rq.length), sel.eq(rq.select)]
        with m.If(r_init):
            for name, _ in self.sources:
                with m.If(sel[name]):
                    m.d.sync += sh.eq(rq.sources[name])
            m.d.sync += [rend.eq(rlen + 1 + proto.HEADER_BYTES), ti.eq(0), t_st0.eq(1)]
        with m.If(t_st0):
            m.d.sync += [t_hdr.eq(ti < 1 + proto.HEADER_BYTES),
                         t_data.eq((ti >= 1 + proto.HEADER_BYTES) & (ti < rend)),
                         t_chi.eq(ti == rend), t_crc.eq((ti >= 1) & (ti < rend)),
                         t_end.eq(ti == rend + 1), t_st0.eq(0), t_st1.eq(1)]
        with m.If(t_st1):
            with m.If(t_hdr):
                with m.Switch(ti[:2]):
                    for i, value in enumerate((proto.SYNC, rcode, rlen[:8], rlen[8:])):
                        with m.Case(i):
                            m.d.sync += tb.eq(value)
            with m.Elif(t_data):
                m.d.sync += [tb.eq(sh[:8]), sh.eq(sh >> 8)]
            with m.Elif(t_chi):
                m.d.sync += tb.eq(crc.crc[8:])
            with m.Else():
                m.d.sync += tb.eq(crc.crc[:8])
            m.d.sync += [t_st1.eq(0), t_st2.eq(1)]
        with m.If(accepted):
            m.d.sync += [ti.eq(ti + 1), t_st2.eq(0)]
            with m.If(t_end):
                m.d.sync += rq.done.eq(1)
            with m.Else():
                m.d.sync += t_st0.eq(1)
        return m


# ---- the executor ------------------------------------------------------------------------------
class RequestExecutor(wiring.Component):
    """Check a received frame, run its request against the core, and ask for the reply.

    Ports:
        frame      In(:class:`FrameSignature`): the frame from the receiver; released once the
                   reply is sent.
        buf_r      In(memory.ReadPort.Signature(...)): drives the request buffer's read port
                   (synchronous: the data follows the address by one cycle).
        reply      Out(:class:`ReplySignature`): the reply to send.
        x_stream   Out(stream.Signature(core input)): a RUN's time steps to the core.
        y_stream   In(stream.Signature(core output)): the core's outputs.
        w_stream   Out(stream.Signature(core weights)), run-time weights only: weight words.
        core_rst   Out(1): resets the core (RESET_STATE); registered.
        busy       Out(1): a RUN or WEIGHTS is in progress.
        error      Out(1): the last request was refused.

    A frame is checked in three registered steps (decode: CRC, command, length, address into
    flags; check: their priority into one-hot actions; act), so a refused frame changes nothing.

    With S > 1 streams (``descriptor.streams``) the frame's ``stream`` byte names the stream of a
    RUN, RUN_KEEP or one-stream RESET_STATE (ids of S and above are refused): a RUN's beats carry
    it to the core (``x_stream.payload.stream``), and the executor keeps one "starts from zero"
    bit per stream (set at power-up and by RESET_STATE, of every stream or of the one named;
    cleared by the stream's next RUN or RUN_KEEP), so a RUN_KEEP continues its own stream's
    state. A RESET_STATE of one stream leaves the core alone; of every stream it resets the core.
    Latency: the reply is asked for 3 cycles after ``frame.done`` (a refusal: 4; a timeout: 1
    after ``frame.timeout``); a RUN's first step is offered on ``x_stream`` ``step_bytes + 6``
    cycles after ``frame.done``. Throughput: one request at a time; a step per ``step_bytes + 2``
    cycles at most (the buffer is read a byte per cycle, the next step while the last one waits),
    a weight word per ``word_bytes + 2``.
    """

    #: cycles from ``frame.done`` to ``reply.start`` for a request answered at once (IDENTIFY,
    #: RESET_STATE, READ) ...
    REPLY_LATENCY = 3
    #: ... and for a refused one
    REFUSE_LATENCY = 4
    #: cycles from ``frame.done`` to the first step on ``x_stream``, besides ``step_bytes``
    RUN_LATENCY = 6

    def __init__(self, descriptor: proto.BoardDescriptor, *, max_len: int, x_stream, y_stream,
                 w_stream=None, window: WeightWindow | None = None) -> None:
        self.descriptor = descriptor
        self.max_len = max_len
        self.window = window
        self.streams = descriptor.streams
        members = {
            "frame": In(FrameSignature(max_len, window, descriptor.streams > 1)),
            "buf_r": In(memory.ReadPort.Signature(addr_width=ceil_log2(max_len), shape=8)),
            "reply": Out(ReplySignature(reply_sources(descriptor))),
            "x_stream": Out(x_stream), "y_stream": In(y_stream),
            "core_rst": Out(1), "busy": Out(1), "error": Out(1),
        }
        if window is not None:
            members["w_stream"] = Out(w_stream)
        if descriptor.spram:
            members["boot_state"] = In(3)
        super().__init__(members)

    def elaborate(self, platform) -> Module:
        m = Module()
        d = self.descriptor
        s = _ExecutorState(d, self.max_len, self.window)
        self._core_streams(m, s)
        src = self.reply.sources
        m.d.comb += [self.buf_r.addr.eq(s.rd_addr), self.error.eq(s.err_led),
                     src.error.eq(Cat(s.error, self.frame.code)),
                     src.desc.eq(self._descriptor(s)),
                     src.result.eq(s.result), src.wcrc.eq(s.wcrc),
                     # the reply's done is when the frame is handled
                     self.frame.release.eq(self.reply.done)]
        m.d.sync += self.core_rst.eq(0)
        with m.FSM() as fsm:
            self._check(m, s)
            self._act(m, s)
            self._run(m, s)
            if self.window is not None:
                self._weights(m, s)
            with m.State("REFUSE"):
                self._reply(m, proto.REPLY_ERROR, proto.ERROR_PAYLOAD_BYTES, "error")
            with m.State("REPLY"):
                with m.If(self.reply.done):
                    m.next = "IDLE"
        busy = ("RUN_FEED", "RUN_WAIT", "RUN_REPLY") + (("W_FEED",) if self.window else ())
        m.d.comb += self.busy.eq(Cat(*[fsm.ongoing(state) for state in busy]).any())
        return m

    def _descriptor(self, s: "_ExecutorState"):
        """The IDENTIFY payload: constant but for the boot state (SPRAM builds) and checksum."""
        head = self.descriptor.to_bytes()[:proto.WEIGHTS_CRC_OFFSET]

        def const(b: bytes):
            return Const(int.from_bytes(b, "little"), 8 * len(b))

        fo = proto.FLAGS_OFFSET
        # boards with several streams: S after the checksum
        tail = const(self.descriptor.to_bytes()[proto.STREAMS_OFFSET:])
        if not self.descriptor.spram:
            return Cat(const(head), s.wcrc, tail)
        flags = Cat(Const(head[fo] & 0x0F, 4), self.boot_state, Const(0, 1))
        return Cat(const(head[:fo]), flags, const(head[fo + 1:]), s.wcrc, tail)

    def _reply(self, m: Module, code, length: int, source: str) -> None:
        """Ask for a reply of ``code`` and ``length`` bytes from ``source``; wait for it."""
        rq = self.reply
        m.d.comb += [rq.start.eq(1), rq.code.eq(code), rq.length.eq(length),
                     rq.select[source].eq(1)]
        m.next = "REPLY"

    def _refuse(self, m: Module, s: "_ExecutorState", error: int) -> None:
        # the error reply itself is asked for in state REFUSE (fewer places ask for replies)
        m.d.sync += [s.error.eq(error), s.err_led.eq(1)]
        m.next = "REFUSE"

    def _core_streams(self, m: Module, s: "_ExecutorState") -> None:
        """Drive the core's input from the step registers; count cycles to its output."""
        d, xs = self.descriptor, self.x_stream
        xb, xw = d.x_bytes, d.x_fmt.width
        m.d.comb += [xs.valid.eq(s.xvalid), xs.payload.first.eq(s.xfirst),
                     xs.payload.last.eq(s.xlast), self.y_stream.ready.eq(s.o_ready)]
        if self.streams > 1:
            m.d.comb += xs.payload.stream.eq(s.sid)
        # x element k is bytes [k*xb, (k+1)*xb) of a step, little-endian
        for k in range(d.input_size):
            m.d.comb += xs.payload.x[k].eq(s.xreg[8 * xb * k:8 * xb * k + xw])
        # The count starts at the sequence's first beat taken (cycle t: 0 at t + 1). The start
        # is registered first (the core's ready is combinational from its controller, and the
        # 32-bit counter sat far from it: the iCEBreaker's critical path), so the counter is
        # loaded one cycle later with the value it would have had.
        start = Signal()
        m.d.sync += start.eq(xs.valid & xs.ready & (s.xfirst | ~s.counting))
        with m.If(xs.valid & xs.ready):
            m.d.sync += s.xvalid.eq(0)
        with m.If(start):
            m.d.sync += [s.counting.eq(1), s.cycles.eq(1)]
        with m.If(s.counting):
            m.d.sync += s.cycles.eq(s.cycles + 1)

    def _check(self, m: Module, s: "_ExecutorState") -> None:
        """States IDLE (wait for a frame), DECODE and CHECK.

        The frame's checks are decoded into registers first, so that the wide comparisons (CRC,
        command, length) and the reply/reset logic they drive are not one long path; CHECK
        resolves their priority into one-hot actions (registered).
        """
        f, max_len = self.frame, self.max_len
        with m.State("IDLE"):
            with m.If(f.done):
                m.next = "DECODE"
            with m.Elif(f.timeout):
                self._refuse(m, s, proto.ERR_TIMEOUT)
        with m.State("DECODE"):
            code, length = f.code, f.length
            is_run = (code == proto.CMD_RUN) | (code == proto.CMD_RUN_KEEP)
            wlen_bad = Const(0)
            if self.window is not None:
                win = self.window
                region, offset = f.w_start[win.offset_bits:], f.w_start[:win.offset_bits]
                depth = Mux(region == win.bias_region, win.bias_rows, win.depth)
                wlen_bad = ((length <= proto.WEIGHTS_ADDRESS_BYTES) | (length > max_len) |
                            ~f.whole_words)
                m.d.sync += [s.is_weights.eq(code == proto.CMD_WEIGHTS),
                             s.addr_bad.eq(f.w_high | (region > win.bias_region) |
                                           (offset + f.w_words > depth))]
            commands = proto.commands(self.window is not None)
            is_reset = code == proto.CMD_RESET_STATE
            if self.streams > 1:
                # a stream id first: a RUN has it and a step at least; a RESET_STATE may have it
                run_short, other_bad = length <= proto.STREAM_ID_BYTES, Mux(
                    is_reset, length > proto.STREAM_ID_BYTES, length != 0)
                m.d.sync += [s.stream_bad.eq((is_run | is_reset) & (length != 0)
                                             & (f.stream >= self.streams)),
                             s.reset_one.eq(length != 0)]
            else:
                run_short, other_bad = length == 0, length != 0
            m.d.sync += [
                s.crc_bad.eq(~f.crc_ok),
                s.cmd_unknown.eq(~Cat(*[code == c for c in commands]).any()),
                s.len_bad.eq(Mux(is_run, run_short | (length > max_len) | ~f.whole_steps,
                                 Mux(code == proto.CMD_WEIGHTS, wlen_bad, other_bad))),
                s.is_identify.eq(code == proto.CMD_IDENTIFY),
                s.is_reset.eq(is_reset),
                s.is_read.eq(code == proto.CMD_READ),
                # a board loading its weights from flash runs nothing until they passed
                s.not_loaded.eq(is_run & ((self.boot_state != 0) if self.descriptor.spram
                                          else Const(0))),
            ]
            m.next = "CHECK"
        with m.State("CHECK"):
            conds = {"crc": s.crc_bad, "unknown": s.cmd_unknown, "length": s.len_bad,
                     "stream": s.stream_bad, "no_result": s.is_read & ~s.has_result,
                     "not_loaded": s.not_loaded, "addr": s.is_weights & s.addr_bad,
                     "weights": s.is_weights, "identify": s.is_identify, "reset": s.is_reset,
                     "read": s.is_read, "run": Const(1)}
            taken = Const(0)
            for a, cond in ((a, conds[a]) for a in s.act):
                m.d.sync += s.act[a].eq(cond & ~taken)
                taken = taken | cond
            m.next = "ACT"

    def _act(self, m: Module, s: "_ExecutorState") -> None:
        """State ACT: refuse the frame, or start what it asks for."""
        d, act, code = self.descriptor, s.act, self.frame.code
        with m.State("ACT"):
            refusals = (("crc", proto.ERR_CRC), ("unknown", proto.ERR_UNKNOWN_COMMAND),
                        ("length", proto.ERR_LENGTH), ("stream", proto.ERR_STREAM),
                        ("no_result", proto.ERR_NO_RESULT), ("not_loaded", proto.ERR_NOT_LOADED),
                        ("addr", proto.ERR_ADDRESS))
            refusals = tuple((a, err) for a, err in refusals if a in act)
            for i, (a, err) in enumerate(refusals):
                with (m.If if i == 0 else m.Elif)(act[a]):
                    self._refuse(m, s, err)
            if self.window is not None:
                with m.Elif(act["weights"]):
                    m.d.sync += [s.err_led.eq(0), s.rd_addr.eq(proto.WEIGHTS_ADDRESS_BYTES),
                                 s.issued.eq(0), s.got_bytes.eq(0), s.pending.eq(0),
                                 s.w_cur.eq(self.frame.w_start), s.w_idx.eq(0)]
                    with m.If(self.frame.w_start == 0):
                        m.d.sync += s.wcrc.eq(proto.CRC16_INIT)
                    m.next = "W_FEED"
            with m.Elif(act["identify"]):
                m.d.sync += s.err_led.eq(0)
                self._reply(m, proto.CMD_IDENTIFY | proto.REPLY_OK, d.descriptor_bytes, "desc")
            with m.Elif(act["reset"]):
                m.d.sync += s.err_led.eq(0)
                if self.streams > 1:
                    with m.If(s.reset_one):  # one stream: its next RUN_KEEP starts from zero
                        m.d.sync += s.fresh.bit_select(self._frame_stream(), 1).eq(1)
                    with m.Else():  # every stream, and the core
                        m.d.sync += [self.core_rst.eq(1), s.fresh.eq(-1)]
                else:
                    m.d.sync += [self.core_rst.eq(1), s.fresh.eq(1)]
                self._reply(m, proto.CMD_RESET_STATE | proto.REPLY_OK, 0, "zero")
            with m.Elif(act["read"]):
                m.d.sync += s.err_led.eq(0)
                self._reply(m, proto.CMD_READ | proto.REPLY_OK, d.result_bytes, "result")
            with m.Else():
                if self.streams > 1:  # this stream's state, its steps after the stream id
                    sid = self._frame_stream()
                    fresh = s.fresh.bit_select(sid, 1)
                    m.d.sync += [fresh.eq(0), s.sid.eq(sid),
                                 s.rd_addr.eq(proto.STREAM_ID_BYTES)]
                else:
                    fresh = s.fresh
                    m.d.sync += [s.fresh.eq(0), s.rd_addr.eq(0)]
                m.d.sync += [s.err_led.eq(0), s.first_flag.eq((code == proto.CMD_RUN) | fresh),
                             s.issued.eq(0), s.got_bytes.eq(0), s.pending.eq(0),
                             s.step_idx.eq(0)]
                m.next = "RUN_FEED"

    def _frame_stream(self):
        """The frame's stream id, as wide as a stream number (checked below S before use)."""
        return self.frame.stream[:max(1, ceil_log2(self.streams))]

    def _fetch(self, m: Module, s: "_ExecutorState", n: int, asm: Signal) -> None:
        """Read ``n`` bytes from the buffer, one per cycle, shifting each into ``asm``.

        A byte read in one cycle arrives the next (``s.pending``); ``issued`` and ``got_bytes``
        count them (the caller resets both and advances ``rd_addr``'s start).
        """
        m.d.sync += s.pending.eq(0)
        with m.If((s.issued != n) & (s.got_bytes != n)):
            m.d.sync += [s.rd_addr.eq(s.rd_addr + 1), s.issued.eq(s.issued + 1),
                         s.pending.eq(1)]
        with m.If(s.pending):
            m.d.sync += [asm.eq(Cat(asm[8:], self.buf_r.data)), s.got_bytes.eq(s.got_bytes + 1)]

    def _run(self, m: Module, s: "_ExecutorState") -> None:
        """States RUN_FEED, RUN_WAIT, RUN_REPLY: the steps to the core, its output back."""
        d, step_bytes = self.descriptor, self.descriptor.step_bytes
        with m.State("RUN_FEED"):
            # read the step's bytes from the buffer, a byte per cycle, while the last step waits
            self._fetch(m, s, step_bytes, s.asm)
            # step_idx == steps - 1, registered (step_idx changes at most every
            # step_bytes + 2 cycles, and not in the first cycle of RUN_FEED)
            m.d.sync += s.is_last.eq(s.step_idx == self.frame.steps_m1)
            with m.If((s.got_bytes == step_bytes) & ~s.xvalid):
                m.d.sync += [s.xreg.eq(s.asm), s.xvalid.eq(1),
                             s.xfirst.eq(s.first_flag & (s.step_idx == 0)),
                             s.xlast.eq(s.is_last), s.step_idx.eq(s.step_idx + 1),
                             s.issued.eq(0), s.got_bytes.eq(0)]
                with m.If(s.is_last):
                    m.d.sync += s.o_ready.eq(1)
                    m.next = "RUN_WAIT"
        with m.State("RUN_WAIT"):
            # o_ready is a register (set on entering RUN_WAIT): the core's output-ready feeds its
            # controller's start conditions
            with m.If(self.y_stream.valid & s.o_ready):
                m.d.sync += [s.res_y.eq(self.y_stream.payload.y.as_value()),
                             s.res_cycles.eq(s.cycles), s.counting.eq(0), s.has_result.eq(1),
                             s.o_ready.eq(0)]
                m.next = "RUN_REPLY"
        with m.State("RUN_REPLY"):
            self._reply(m, self.frame.code | proto.REPLY_OK, d.result_bytes, "result")

    def _weights(self, m: Module, s: "_ExecutorState") -> None:
        """States W_FEED, W_REPLY: a WEIGHTS frame's words to the core's weight port."""
        with m.State("W_FEED"):
            # read the words from the buffer, a byte per cycle, into the core's weight port
            ws, wb = self.w_stream, self.window.word_bytes
            m.d.comb += [ws.valid.eq(s.w_valid), ws.payload.addr.eq(s.w_cur),
                         ws.payload.data.eq(s.w_reg[-8 * wb:]), ws.payload.last.eq(s.w_last)]
            self._fetch(m, s, wb, s.w_asm)
            with m.If(s.pending):
                m.d.sync += [s.wcrc.eq(crc_step(proto.crc16_parameters, s.wcrc,
                                                self.buf_r.data))]
            with m.If((s.got_bytes == wb) & ~s.w_valid):
                m.d.sync += [s.w_reg.eq(s.w_asm), s.w_valid.eq(1),
                             s.w_last.eq(s.w_idx == self.frame.w_words - 1),
                             s.w_idx.eq(s.w_idx + 1), s.issued.eq(0), s.got_bytes.eq(0)]
            with m.If(ws.valid & ws.ready):
                m.d.sync += [s.w_valid.eq(0), s.w_cur.eq(s.w_cur + 1)]
                with m.If(s.w_last):
                    m.next = "W_REPLY"
        with m.State("W_REPLY"):
            self._reply(m, proto.CMD_WEIGHTS | proto.REPLY_OK, proto.WEIGHTS_REPLY_BYTES, "wcrc")


class _ExecutorState:
    """The executor's registers."""

    #: in priority order ("stream": boards with several streams only)
    ACTIONS = ("crc", "unknown", "length", "stream", "no_result", "not_loaded", "addr",
               "weights", "identify", "reset", "read", "run")

    def __init__(self, d: proto.BoardDescriptor, max_len: int,
                 window: WeightWindow | None) -> None:
        step_bytes, yb, yw = d.step_bytes, d.y_bytes, d.out_fmt.width
        wb = window.word_bytes if window is not None else 1
        # ---- the frame's checks, and the action they pick ----
        self.crc_bad, self.cmd_unknown, self.len_bad = Signal(), Signal(), Signal()
        self.is_identify, self.is_reset, self.is_read = Signal(), Signal(), Signal()
        self.is_weights, self.addr_bad = Signal(), Signal()
        self.not_loaded = Signal()
        streams = d.streams
        self.stream_bad = Signal() if streams > 1 else Const(0)  # a stream id of S or above
        self.reset_one = Signal()  # a RESET_STATE of one stream (several streams only)
        self.act = {a: Signal(name=f"act_{a}") for a in self.ACTIONS
                    if a != "stream" or streams > 1}
        self.error = Signal(8)
        self.err_led = Signal()
        # ---- reading the buffer ----
        self.rd_addr = Signal(range(max_len + 1))
        self.issued = Signal(range(max(step_bytes, wb) + 1))     # bytes asked for ...
        self.got_bytes = Signal(range(max(step_bytes, wb) + 1))  # ... and received
        self.pending = Signal()  # a byte asked for last cycle: its data is on the port
        # ---- RUN ----
        self.first_flag = Signal()
        # per stream: its next sequence starts from zero state (power-up, reset)
        self.fresh = Signal(streams, init=(1 << streams) - 1)
        self.sid = Signal(range(streams))  # the stream of the RUN in progress
        self.asm = Signal(8 * step_bytes)  # the step being assembled, little-endian
        self.step_idx = Signal(17)
        self.is_last = Signal()
        self.xreg = Signal(8 * step_bytes)
        self.xvalid, self.xfirst, self.xlast = Signal(), Signal(), Signal()
        self.o_ready = Signal()
        self.counting = Signal()
        self.cycles = Signal(8 * proto.CYCLES_BYTES)
        self.res_y = Signal(d.output_size * yw)
        self.res_cycles = Signal(8 * proto.CYCLES_BYTES)
        self.has_result = Signal()

        def element(i: int):
            v = self.res_y[i * yw:(i + 1) * yw]
            return Cat(v, v[-1].replicate(8 * yb - yw)) if 8 * yb > yw else v

        #: the result reply: outputs sign-extended to whole bytes, then the cycle count
        self.result = Cat(*[element(i) for i in range(d.output_size)], self.res_cycles)
        # ---- WEIGHTS ----
        self.wcrc = Signal(16, init=d.weights_crc)  # CRC-16 of the words written since address 0
        aw = window.addr_width if window is not None else 1
        self.w_cur = Signal(aw)  # address of the word on the weight port
        self.w_idx = Signal(range(max_len // wb + 2))  # words handed over so far
        # A word is assembled in the RUN step registers when it fits there (no extra logic).
        share = wb <= step_bytes
        self.w_asm = self.asm if share else Signal(8 * wb)  # the word being assembled
        self.w_reg = self.xreg if share else Signal(8 * wb)  # the word on the weight port (top)
        self.w_valid, self.w_last = Signal(), Signal()
