"""The board top: GRU core + UART link (the protocol of :mod:`gru_hw.link`) + PLL + LEDs."""


from amaranth import Cat, ClockDomain, Const, Elaboratable, Module, Mux, ResetInserter, Signal
from amaranth.build import Attrs, Pins, Resource, Subsignal
from amaranth.build import ResourceError
from amaranth.lib import io, memory, wiring
from amaranth.lib.wiring import In, Out

from .. import link as proto
from ..config import CoreConfig
from ..errors import GruHwError
from . import Board
from .pll import PLLClockDomain
from .uart import UARTReceiver, UARTTransmitter, uart_divisor

DEFAULT_BUFFER_BYTES = 2048


def default_max_steps(qm) -> int:
    """Return the longest sequence a RUN frame takes: a 2 KiB step buffer, at most 1024 steps."""
    step = qm.input_size * proto.byte_width(qm.spec.x_fmt.width)
    return max(1, min(1024, DEFAULT_BUFFER_BYTES // step))


def crc16_update(crc, byte):
    """Return the gateware expression for CRC-16/CCITT-FALSE after one more byte (unrolled)."""
    # Each output bit is the XOR of a fixed set of input bits: find the sets symbolically
    # (bits 0..15 of crc are "c0".."c15", bits 0..7 of byte are "b0".."b7").
    c = [{f"c{i}"} for i in range(16)]
    for i in range(8):
        c[8 + i] = c[8 + i] ^ {f"b{i}"}
    for _ in range(8):
        top = c[15]
        c = [set()] + c[:15]
        for i in range(16):
            if (0x1021 >> i) & 1:
                c[i] = c[i] ^ top
    inputs = {**{f"c{i}": crc[i] for i in range(16)}, **{f"b{i}": byte[i] for i in range(8)}}
    bits = []
    for terms in c:
        v = Const(0, 1)
        for t in sorted(terms):
            v = v ^ inputs[t]
        bits.append(v)
    return Cat(*bits)


def make_core(qm, lanes: int, dsp_budget: int | None = None, runtime_weights: bool = False):
    """Return the GRUCore for a board (and its name, for the report).

    With ``dsp_budget`` (the device's hard multipliers), the core takes the "seq" profile (the
    GRU tail's four products as small sequential logic multipliers) when the lanes plus the
    tail would need more multipliers than the device has, so every hard multiplier serves a MAC
    lane. ``runtime_weights`` adds the weight port (the memories start with ``qm``'s weights).
    """
    from ..gateware import GRUCore

    profile = "dsp"
    if dsp_budget is not None:
        # A tail product is wider than 16 x 16 (e.g. r * hn): count two hard blocks for each.
        tail = CoreConfig(qm, lanes, "dsp").schedule.tail_multipliers
        if lanes + 2 * tail > dsp_budget:
            profile = "seq"
    core = GRUCore(qm, lanes, profile=profile, runtime_weights=runtime_weights)
    extra = ", runtime weights" if runtime_weights else ""
    return core, f"GRUCore (profile {profile}{extra})"


class LinkTop(wiring.Component):
    """The GRU core behind a framed UART protocol (see :mod:`gru_hw.link`).

    Ports:
        rx    In(1): serial line from the host (8N1, ``divisor`` clocks per bit).
        tx    Out(1): serial line to the host.
        leds  Out(4): heartbeat, busy (a RUN or WEIGHTS in progress), error (the last request was
              refused), activity (bytes received recently).

    A request is buffered whole (RUN steps go to a ``max_steps`` x step-bytes RAM) and checked
    (CRC, command, length) before anything is done, so a refused frame changes nothing. A frame
    that stops arriving for ``timeout_cycles`` is refused with a timeout error.

    Latency of a RUN: the frame's bytes, then the core's latency, then the reply's bytes.
    Throughput: one request at a time; the core sees one step per ``step_bytes`` clocks at most.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    leds: Out(4)

    def __init__(self, qm, lanes: int, *, core=None, divisor: int, timeout_cycles: int,
                 clock_hz: int, max_steps: int | None = None, heartbeat_log2: int = 24,
                 stretch_log2: int = 20, dsp_budget: int | None = None,
                 runtime_weights: bool = False) -> None:
        self.qm = qm
        self.lanes = lanes
        self.core, self.core_kind = ((core, "custom") if core is not None
                                     else make_core(qm, lanes, dsp_budget, runtime_weights))
        self.runtime_weights = bool(getattr(self.core, "runtime_weights", False))
        self.divisor = divisor
        self.timeout_cycles = timeout_cycles
        self.max_steps = max_steps if max_steps is not None else default_max_steps(qm)
        if not 1 <= self.max_steps <= 0xFFFF:
            raise GruHwError(f"max_steps must be within 1..65535, got {self.max_steps}")
        self.descriptor = proto.BoardDescriptor.for_model(
            qm, lanes=lanes, max_steps=self.max_steps, clock_hz=clock_hz,
            runtime_weights=self.runtime_weights)
        self.heartbeat_log2 = heartbeat_log2
        self.stretch_log2 = stretch_log2
        super().__init__()

    def elaborate(self, platform) -> Module:
        m = Module()
        d = self.descriptor
        n_in, n_out = d.input_size, d.output_size
        xb, yb = d.x_bytes, d.y_bytes
        xw, yw = d.x_fmt.width, d.out_fmt.width
        step_bytes = d.step_bytes
        max_len = self.max_steps * step_bytes
        desc_bytes = d.to_bytes()
        sh_bytes = max(len(desc_bytes), d.result_bytes, 2)

        m.submodules.uart_rx = urx = UARTReceiver(self.divisor)
        m.submodules.uart_tx = utx = UARTTransmitter(self.divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), urx.o_stream.ready.eq(1)]
        byte = urx.o_stream.payload
        got = urx.o_stream.valid

        # the core's reset is registered: it fans out to every register of the core
        core_rst = Signal()
        m.d.sync += core_rst.eq(0)
        o_ready = Signal()
        core = self.core
        m.d.comb += core.o_stream.ready.eq(o_ready)
        m.submodules.core = ResetInserter(core_rst)(core)

        m.submodules.buf = buf = memory.Memory(shape=8, depth=max_len, init=[])
        wr = buf.write_port()
        rd = buf.read_port(transparent_for=())

        # ---- request state ----
        code = Signal(8)
        length = Signal(16)
        length_m1 = Signal(16)  # length - 1, for the end-of-payload test
        count = Signal(16)
        crc = Signal(16)
        rcrc = Signal(16)
        step_byte = Signal(range(step_bytes))
        steps = Signal(17)
        steps_m1 = Signal(17)  # steps - 1
        timer = Signal(range(self.timeout_cycles + 2))
        # timer == timeout_cycles, registered (so a timeout acts one cycle later); not set in a
        # cycle that receives a byte (that restarts the timer)
        timed_out = Signal()
        # ---- reply state ----
        rcode = Signal(8)
        rlen = Signal(16)
        sh = Signal(8 * sh_bytes)
        ti = Signal(17)
        tcrc = Signal(16)
        error = Signal(8)
        err_led = Signal()
        # ---- run state ----
        first_flag = Signal()
        rd_addr = Signal(range(max_len + 1))
        issued = Signal(range(step_bytes + 1))
        got_bytes = Signal(range(step_bytes + 1))
        pending = Signal()
        asm = Signal(8 * step_bytes)
        step_idx = Signal(17)
        xreg = Signal(8 * step_bytes)
        xvalid = Signal()
        xfirst = Signal()
        xlast = Signal()
        counting = Signal()
        cycles = Signal(32)
        res_y = Signal(n_out * yw)
        res_cycles = Signal(32)
        has_result = Signal()
        fresh = Signal(init=1)  # the next sequence starts from zero state (power-up, RESET_STATE)
        # ---- weights state (run-time weights) ----
        rw = self.runtime_weights
        commands = proto.COMMANDS + ((proto.CMD_WEIGHTS,) if rw else ())
        wcrc = Signal(16, init=d.weights_crc)   # CRC-16 of the words written since address 0
        wb = d.weight_bytes if rw else 1
        aw = self.core.w_addr_width if rw else 1
        w_start = Signal(aw)                     # a WEIGHTS frame's start address ...
        w_high = Signal()                        # ... and whether it has bits beyond the map's
        w_byte = Signal(range(max(wb, 2)))       # byte within a word, while receiving
        w_words = Signal(range(max_len // wb + 2))  # words in the frame
        addr_bad = Signal()
        is_weights = Signal()

        def element(i: int):
            v = res_y[i * yw:(i + 1) * yw]
            return Cat(v, v[-1].replicate(8 * yb - yw)) if 8 * yb > yw else v

        result_flat = Cat(*[element(i) for i in range(n_out)], res_cycles)

        # core input: x element k is bytes [k*xb, (k+1)*xb) of a step, little-endian
        m.d.comb += [
            core.i_stream.valid.eq(xvalid),
            core.i_stream.payload.first.eq(xfirst),
            core.i_stream.payload.last.eq(xlast),
        ]
        for k in range(n_in):
            m.d.comb += core.i_stream.payload.x[k].eq(xreg[8 * xb * k:8 * xb * k + xw])
        with m.If(core.i_stream.valid & core.i_stream.ready):
            m.d.sync += xvalid.eq(0)
            with m.If(xfirst | ~counting):
                m.d.sync += [counting.eq(1), cycles.eq(0)]
        with m.If(counting):
            m.d.sync += cycles.eq(cycles + 1)

        m.d.comb += [wr.addr.eq(count), wr.data.eq(byte), rd.addr.eq(rd_addr)]

        # The reply sender runs beside the FSM (which only waits in REPLY for r_done), driven
        # by one-hot registered stages, so that its wide registers' enables (sh, tcrc, ti) are
        # one or two registered bits, not the FSM's state decode. r_start (set with the reply's
        # code, length and source) -> r_init (load sh, reset ti / tcrc) -> per byte: t_st0
        # (decode ti against rlen + 4 into flags), t_st1 (pick the byte into tb; shift sh),
        # t_st2 (offer it; the CRC update). The transmitter takes a byte every 10 bit times, so
        # the stages cost 2 cycles per byte, hidden.
        tb = Signal(8)
        rend = Signal(17)  # rlen + 4
        r_start, r_init, r_done = (Signal(name=n) for n in ("r_start", "r_init", "r_done"))
        t_st0, t_st1, t_st2 = (Signal(name=n) for n in ("t_st0", "t_st1", "t_st2"))
        t_hdr, t_data, t_chi, t_crc, t_end = (Signal(name=n) for n in
                                              ("t_hdr", "t_data", "t_chi", "t_crc", "t_end"))

        # The wide reply register sh is loaded in the first cycle of REPLY from the source that
        # reply() chose (registered one-hot), not from every state that replies.
        # the descriptor is constant but for the weights checksum, its last field
        desc_head = desc_bytes[:proto.WEIGHTS_CRC_OFFSET]
        sh_srcs = {"error": Cat(error, code),
                   "desc": Cat(Const(int.from_bytes(desc_head, "little"), 8 * len(desc_head)),
                               wcrc),
                   "zero": Const(0, 1), "result": result_flat, "wcrc": wcrc}
        sh_sel = {k: Signal(name=f"sh_sel_{k}") for k in sh_srcs}
        m.d.sync += [r_start.eq(0), r_init.eq(r_start), r_done.eq(0)]  # pulses (the FSM sets)

        def reply(code_v, len_v, src):
            m.d.sync += [rcode.eq(code_v), rlen.eq(len_v), r_start.eq(1)]
            m.d.sync += [sel.eq(k == src) for k, sel in sh_sel.items()]
            m.next = "REPLY"

        def refuse(err_v):
            # the error reply itself is loaded in state REFUSE (fewer loads of the wide sh)
            m.d.sync += [error.eq(err_v), err_led.eq(1)]
            m.next = "REFUSE"

        w_cur = Signal(aw)           # address of the word on the weight port
        w_idx = Signal.like(w_words)  # words handed over so far (of w_words)
        # A word is assembled in the RUN step registers when it fits there (no extra logic).
        share = wb <= step_bytes
        w_asm = asm if share else Signal(8 * wb)  # the word being assembled, little-endian
        w_reg = xreg if share else Signal(8 * wb)  # the word on the weight port (top bytes)
        w_valid = Signal()
        w_last = Signal()

        receiving = Signal()
        m.d.sync += timed_out.eq((timer == self.timeout_cycles) & ~got)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(got & (byte == proto.SYNC)):
                    m.d.sync += [crc.eq(0xFFFF), code.eq(0), timer.eq(0)]
                    m.next = "CODE"
            for state, nxt in (("CODE", "LEN0"), ("LEN0", "LEN1"), ("LEN1", None),
                               ("PAYLOAD", None), ("CRC0", "CRC1"), ("CRC1", "DECODE")):
                with m.State(state):
                    m.d.comb += receiving.eq(1)
                    with m.If(got):
                        m.d.sync += timer.eq(0)
                        if state in ("CODE", "LEN0", "LEN1", "PAYLOAD"):
                            m.d.sync += crc.eq(crc16_update(crc, byte))
                        if state == "CODE":
                            m.d.sync += code.eq(byte)
                        elif state == "LEN0":
                            m.d.sync += length[:8].eq(byte)
                        elif state == "LEN1":
                            m.d.sync += [length[8:].eq(byte), count.eq(0), step_byte.eq(0),
                                         steps.eq(0), steps_m1.eq(-1), w_byte.eq(0),
                                         w_words.eq(0), w_high.eq(0),
                                         length_m1.eq(Cat(length[:8], byte) - 1)]
                            with m.If(Cat(length[:8], byte) == 0):
                                m.next = "CRC0"
                            with m.Else():
                                m.next = "PAYLOAD"
                        elif state == "PAYLOAD":
                            m.d.comb += wr.en.eq(count < max_len)
                            m.d.sync += count.eq(count + 1)
                            if rw:
                                with m.Switch(count):
                                    for i in range(4):
                                        with m.Case(i):
                                            lo, hi = 8 * i, min(8 * i + 8, aw)
                                            if hi > lo:
                                                m.d.sync += w_start[lo:hi].eq(byte[:hi - lo])
                                            if 8 * i + 8 > aw:
                                                beyond = byte[max(0, aw - 8 * i):]
                                                with m.If(beyond.any()):
                                                    m.d.sync += w_high.eq(1)
                                    with m.Default():
                                        with m.If(w_byte == wb - 1):
                                            m.d.sync += [w_byte.eq(0), w_words.eq(w_words + 1)]
                                        with m.Else():
                                            m.d.sync += w_byte.eq(w_byte + 1)
                            with m.If(step_byte == step_bytes - 1):
                                m.d.sync += [step_byte.eq(0), steps.eq(steps + 1),
                                             steps_m1.eq(steps)]
                            with m.Else():
                                m.d.sync += step_byte.eq(step_byte + 1)
                            with m.If(count == length_m1):
                                m.next = "CRC0"
                        elif state == "CRC0":
                            m.d.sync += rcrc[8:].eq(byte)
                        elif state == "CRC1":
                            m.d.sync += rcrc[:8].eq(byte)
                        if nxt is not None:
                            m.next = nxt
                    with m.Elif(timed_out):
                        refuse(proto.ERR_TIMEOUT)
                    with m.Else():
                        m.d.sync += timer.eq(timer + 1)
            # The frame's checks are decoded into registers first, so that the wide comparisons
            # (CRC, command, length) and the reply/reset logic they drive are not one long path.
            crc_bad = Signal()
            cmd_unknown = Signal()
            len_bad = Signal()
            is_identify = Signal()
            is_reset = Signal()
            is_read = Signal()
            with m.State("DECODE"):
                is_run = (code == proto.CMD_RUN) | (code == proto.CMD_RUN_KEEP)
                if rw:
                    core_ = self.core
                    ob = core_.w_offset_bits
                    sel = w_start[ob:]
                    off = w_start[:ob]
                    depth = Mux(sel == core_.lanes, core_.schedule.bias_rows, core_.w_depth)
                    wlen_bad = (length <= 4) | (length > max_len) | (w_byte != 0)
                    m.d.sync += [is_weights.eq(code == proto.CMD_WEIGHTS),
                                 addr_bad.eq(w_high | (sel > core_.lanes) |
                                             (off + w_words > depth))]
                else:
                    wlen_bad = Const(0)
                m.d.sync += [
                    crc_bad.eq(crc != rcrc),
                    cmd_unknown.eq(~Cat(*[code == c for c in commands]).any()),
                    len_bad.eq(Mux(is_run,
                                   (length == 0) | (length > max_len) | (step_byte != 0),
                                   Mux(code == proto.CMD_WEIGHTS, wlen_bad, length != 0))),
                    is_identify.eq(code == proto.CMD_IDENTIFY),
                    is_reset.eq(code == proto.CMD_RESET_STATE),
                    is_read.eq(code == proto.CMD_READ),
                ]
                m.next = "CHECK"
            # CHECK resolves the checks' priority into one-hot actions (registered); ACT does one
            acts = ("crc", "unknown", "length", "no_result", "addr", "weights", "identify",
                    "reset", "read", "run")
            act = {a: Signal(name=f"act_{a}") for a in acts}
            with m.State("CHECK"):
                conds = [crc_bad, cmd_unknown, len_bad, is_read & ~has_result,
                         is_weights & addr_bad, is_weights, is_identify, is_reset, is_read,
                         Const(1)]
                taken = Const(0)
                for a, cond in zip(acts, conds):
                    m.d.sync += act[a].eq(cond & ~taken)
                    taken = taken | cond
                m.next = "ACT"
            with m.State("ACT"):
                with m.If(act["crc"]):
                    refuse(proto.ERR_CRC)
                with m.Elif(act["unknown"]):
                    refuse(proto.ERR_UNKNOWN_COMMAND)
                with m.Elif(act["length"]):
                    refuse(proto.ERR_LENGTH)
                with m.Elif(act["no_result"]):
                    refuse(proto.ERR_NO_RESULT)
                with m.Elif(act["addr"]):
                    refuse(proto.ERR_ADDRESS)
                with m.Elif(act["weights"]):
                    m.d.sync += [err_led.eq(0), rd_addr.eq(4), issued.eq(0), got_bytes.eq(0),
                                 pending.eq(0), w_cur.eq(w_start), w_idx.eq(0)]
                    with m.If(w_start == 0):
                        m.d.sync += wcrc.eq(0xFFFF)
                    m.next = "W_FEED"
                with m.Elif(act["identify"]):
                    m.d.sync += err_led.eq(0)
                    reply(proto.CMD_IDENTIFY | proto.REPLY_OK, len(desc_bytes), "desc")
                with m.Elif(act["reset"]):
                    m.d.sync += core_rst.eq(1)
                    m.d.sync += [err_led.eq(0), fresh.eq(1)]
                    reply(proto.CMD_RESET_STATE | proto.REPLY_OK, 0, "zero")
                with m.Elif(act["read"]):
                    m.d.sync += err_led.eq(0)
                    reply(proto.CMD_READ | proto.REPLY_OK, d.result_bytes, "result")
                with m.Else():
                    m.d.sync += [err_led.eq(0), first_flag.eq((code == proto.CMD_RUN) | fresh),
                                 fresh.eq(0),
                                 rd_addr.eq(0), issued.eq(0), got_bytes.eq(0), pending.eq(0),
                                 step_idx.eq(0)]
                    m.next = "RUN_FEED"
            with m.State("RUN_FEED"):
                m.d.sync += pending.eq(0)
                with m.If((issued != step_bytes) & (got_bytes != step_bytes)):
                    m.d.sync += [rd_addr.eq(rd_addr + 1), issued.eq(issued + 1), pending.eq(1)]
                with m.If(pending):
                    m.d.sync += [asm.eq(Cat(asm[8:], rd.data)), got_bytes.eq(got_bytes + 1)]
                # step_idx == steps - 1, registered (step_idx changes at most every
                # 2 * step_bytes cycles, and not in the first cycle of RUN_FEED)
                is_last = Signal()
                m.d.sync += is_last.eq(step_idx == steps_m1)
                with m.If((got_bytes == step_bytes) & ~xvalid):
                    m.d.sync += [xreg.eq(asm), xvalid.eq(1),
                                 xfirst.eq(first_flag & (step_idx == 0)),
                                 xlast.eq(is_last), step_idx.eq(step_idx + 1),
                                 issued.eq(0), got_bytes.eq(0)]
                    with m.If(is_last):
                        m.d.sync += o_ready.eq(1)
                        m.next = "RUN_WAIT"
            with m.State("W_FEED"):
                # read the words from the buffer, a byte per cycle, into the core's weight port
                if rw:
                    ws = self.core.w_stream
                    m.d.comb += [ws.valid.eq(w_valid), ws.payload.addr.eq(w_cur),
                                 ws.payload.data.eq(w_reg[-8 * wb:][:ws.payload.data.shape().width]),
                                 ws.payload.last.eq(w_last)]
                    m.d.sync += pending.eq(0)
                    with m.If((issued != wb) & (got_bytes != wb)):
                        m.d.sync += [rd_addr.eq(rd_addr + 1), issued.eq(issued + 1),
                                     pending.eq(1)]
                    with m.If(pending):
                        m.d.sync += [w_asm.eq(Cat(w_asm[8:], rd.data)),
                                     got_bytes.eq(got_bytes + 1),
                                     wcrc.eq(crc16_update(wcrc, rd.data))]
                    with m.If((got_bytes == wb) & ~w_valid):
                        m.d.sync += [w_reg.eq(w_asm), w_valid.eq(1),
                                     w_last.eq(w_idx == w_words - 1), w_idx.eq(w_idx + 1),
                                     issued.eq(0), got_bytes.eq(0)]
                    with m.If(ws.valid & ws.ready):
                        m.d.sync += [w_valid.eq(0), w_cur.eq(w_cur + 1)]
                        with m.If(w_last):
                            m.next = "W_REPLY"
            with m.State("W_REPLY"):
                reply(proto.CMD_WEIGHTS | proto.REPLY_OK, 2, "wcrc")
            with m.State("RUN_WAIT"):
                # o_ready is a register (set on entering RUN_WAIT): the core's output-ready
                # feeds its controller's start conditions
                with m.If(core.o_stream.valid & o_ready):
                    m.d.sync += [res_y.eq(core.o_stream.payload.y.as_value()),
                                 res_cycles.eq(cycles), counting.eq(0), has_result.eq(1),
                                 o_ready.eq(0)]
                    m.next = "RUN_REPLY"
            with m.State("REFUSE"):
                reply(proto.REPLY_ERROR, 2, "error")
            with m.State("RUN_REPLY"):
                reply(code | proto.REPLY_OK, d.result_bytes, "result")
            with m.State("REPLY"):
                with m.If(r_done):
                    m.next = "IDLE"

        # ---- the reply sender (see above) ----
        m.d.comb += [utx.i_stream.valid.eq(t_st2), utx.i_stream.payload.eq(tb)]
        with m.If(r_init):
            for k, src in sh_srcs.items():
                with m.If(sh_sel[k]):
                    m.d.sync += sh.eq(src)
            m.d.sync += [rend.eq(rlen + 4), ti.eq(0), tcrc.eq(0xFFFF), t_st0.eq(1)]
        with m.If(t_st0):
            m.d.sync += [t_hdr.eq(ti < 4), t_data.eq((ti >= 4) & (ti < rend)),
                         t_chi.eq(ti == rend), t_crc.eq((ti >= 1) & (ti < rend)),
                         t_end.eq(ti == rend + 1), t_st0.eq(0), t_st1.eq(1)]
        with m.If(t_st1):
            with m.If(t_hdr):
                with m.Switch(ti[:2]):
                    with m.Case(0):
                        m.d.sync += tb.eq(proto.SYNC)
                    with m.Case(1):
                        m.d.sync += tb.eq(rcode)
                    with m.Case(2):
                        m.d.sync += tb.eq(rlen[:8])
                    with m.Case(3):
                        m.d.sync += tb.eq(rlen[8:])
            with m.Elif(t_data):
                m.d.sync += [tb.eq(sh[:8]), sh.eq(sh >> 8)]
            with m.Elif(t_chi):
                m.d.sync += tb.eq(tcrc[8:])
            with m.Else():
                m.d.sync += tb.eq(tcrc[:8])
            m.d.sync += [t_st1.eq(0), t_st2.eq(1)]
        with m.If(t_st2 & utx.i_stream.ready):
            m.d.sync += [ti.eq(ti + 1), t_st2.eq(0)]
            with m.If(t_crc):
                m.d.sync += tcrc.eq(crc16_update(tcrc, tb))
            with m.If(t_end):
                m.d.sync += r_done.eq(1)
            with m.Else():
                m.d.sync += t_st0.eq(1)

        # ---- LEDs ----
        beat = Signal(self.heartbeat_log2)
        m.d.sync += beat.eq(beat + 1)
        stretch = Signal(self.stretch_log2)
        with m.If(got):
            m.d.sync += stretch.eq(-1)
        with m.Elif(stretch != 0):
            m.d.sync += stretch.eq(stretch - 1)
        busy = (fsm.ongoing("RUN_FEED") | fsm.ongoing("RUN_WAIT") | fsm.ongoing("RUN_REPLY")
                | fsm.ongoing("W_FEED"))
        m.d.sync += self.leds.eq(Cat(beat[-1], busy, err_led, (stretch != 0) | receiving))
        return m


_CRAB_UART = Resource("uart", 0, Subsignal("rx", Pins("0", dir="i", conn=("io", 0))),
                      Subsignal("tx", Pins("1", dir="o", conn=("io", 0))),
                      Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP"))


class BoardTop(Elaboratable):
    """A whole board: PLL-driven ``sync`` domain, :class:`LinkTop` on the board's UART, LEDs.

    ``clock_mhz`` is what the PLL is asked for (default: the board's); :attr:`clock_mhz` is what
    it makes. ``baud`` sets the UART (8N1). Without a platform (simulation) the PLL is skipped:
    drive :attr:`rx`, watch :attr:`tx`, and use ``divisor`` / ``timeout_cycles`` as given.
    """

    def __init__(self, qm, lanes: int, board: Board | None, *, clock_mhz: float | None = None,
                 baud: int = proto.DEFAULT_BAUD, core=None, max_steps: int | None = None,
                 timeout_ms: float = 50.0, divisor: int | None = None,
                 timeout_cycles: int | None = None, clock_not_above: bool = False,
                 runtime_weights: bool = False) -> None:
        self.board = board
        if board is not None:
            want = clock_mhz if clock_mhz is not None else board.default_clock_mhz
            self.pll = PLLClockDomain(board.family, None, board.clock_in_mhz, want,
                                      not_above=clock_not_above)
            self.clock_mhz = self.pll.fout_mhz
        else:
            self.pll = None
            self.clock_mhz = clock_mhz if clock_mhz is not None else 12.0
        hz = self.clock_mhz * 1e6
        self.baud = baud
        div = divisor if divisor is not None else uart_divisor(hz, baud, where="--baud")
        tmo = timeout_cycles if timeout_cycles is not None else int(hz * timeout_ms / 1e3)
        log2 = max(4, int(hz).bit_length() - 1)
        self.link = LinkTop(qm, lanes, core=core, divisor=div, timeout_cycles=tmo,
                            clock_hz=int(round(hz)), max_steps=max_steps,
                            heartbeat_log2=log2, stretch_log2=max(2, log2 - 4),
                            dsp_budget=board.dsp if board is not None else None,
                            runtime_weights=runtime_weights)
        self.rx = self.link.rx
        self.tx = self.link.tx

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
        if board.module == "orangecrab_r0_2":
            platform.add_resources([_CRAB_UART])
        res = platform.lookup("uart", 0)
        uart = platform.request("uart", 0, dir={sub.name: "-" for sub in res.ios
                                                if isinstance(sub, Subsignal)})
        m.submodules.uart_rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [self.link.rx.eq(rx_buf.i), tx_buf.o.eq(self.link.tx)]
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
