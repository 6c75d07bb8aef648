"""The UART link protocol, shared by the host (:mod:`gru_hw.link`) and the board gateware.

Frame (both directions)::

    SYNC (0xA5) | CODE (1) | LEN (2, little-endian) | PAYLOAD (LEN bytes) | CRC (2, MSB first)

CRC is CRC-16/CCITT-FALSE (:data:`crc16_parameters`: polynomial 0x1021, initial value 0xFFFF, no
reflection, no final xor; ``crc16(b"123456789") == 0x29B1``) over CODE, LEN and PAYLOAD (not
SYNC). Sent MSB first, the CRC of a whole frame after SYNC is 0 (the residue).

Requests (CODE = command):

    IDENTIFY     0x01  LEN 0       -> descriptor (see :class:`BoardDescriptor`)
    RESET_STATE  0x02  LEN 0       -> empty; the next RUN_KEEP starts from zero state (and the
                                      core's control logic is reset)
    RUN          0x03  LEN T*I*xb  -> one sequence from zero state: T steps of I values, each
                                      ``xb`` bytes, little-endian two's complement, in x_fmt
    READ         0x04  LEN 0       -> the last RUN's reply again (if a reply was lost)
    RUN_KEEP     0x05  like RUN, but starts from the state the last sequence left (``--keep-state``)
    WEIGHTS      0x06  LEN 4+n*wb  -> (run-time-weights builds only) write n weight words: a 4-byte
                                      little-endian start address in the core's weight map (see
                                      spec.json ``weights``), then n words of ``wb`` bytes
                                      (little-endian two's complement). The frame must stay inside
                                      one region. Reply: the CRC-16 of the weight words written
                                      since the last WEIGHTS frame at address 0 (2 bytes, LE)

Interleaved streams: a board built with S > 1 streams (``CoreConfig.streams``; ``streams`` in
the descriptor) keeps a hidden state per stream. On such a board only, three requests carry a
stream id, one byte (:data:`STREAM_ID_BYTES`) before anything else in the payload:

    RUN          0x03  LEN 1+T*I*xb  stream id s, then the T steps: one sequence of stream s from
                                     zero state
    RUN_KEEP     0x05  LEN 1+T*I*xb  like RUN, but starts from the state stream s's last sequence
                                     left (whatever ran on other streams meanwhile); from zero when
                                     stream s has not run since power-up or its last reset
    RESET_STATE  0x02  LEN 0         every stream's next RUN_KEEP starts from zero state (and the
                                     core's control logic is reset), as on a one-stream board
                       LEN 1         stream id s: only stream s's next RUN_KEEP starts from zero;
                                     the other streams and the core are untouched

A RUN or RUN_KEEP takes 1 to ``max steps`` steps after the id (LEN at most
1 + max_steps*I*xb: the board's request buffer holds the id too); a RESET_STATE longer than one
byte, or a RUN without a whole step after the id, is refused as a wrong length. A stream id
outside ``0 .. S-1`` is refused with :data:`ERR_STREAM` ("stream id out of range").
Replies are the same as on a one-stream board (READ returns the last RUN's reply, whatever its
stream). The board runs one request at a time, so a RUN's steps are never interleaved with
another's on the link: streams are independent hidden states (for instance one per sensor or
client), each continued by its own RUN_KEEPs. A board with S = 1 speaks exactly the protocol
above: no stream byte, the 46-byte descriptor.

Descriptor (IDENTIFY reply payload), little-endian, :data:`DESCRIPTOR_BYTES` = 46 bytes::

    0 magic "GRUH" | 4 version (2) | 5 model hash (8) | 13 I (u16) | 15 H (u16) | 17 O (u16) |
    19 layers (u8) | 20 x_fmt int_bits (i8), frac_bits (i8), width (u8) | 23 out_fmt int_bits,
    frac_bits, width | 26 x rounding (u8), x overflow (u8) | 28 xb (u8), yb (u8) |
    30 max steps (u16) | 32 lanes (u16) | 34 clock (kHz, u32) | 38 flags (u8) |
    39 weight word bytes (u8) | 40 weight words (u32) | 44 weights checksum (u16)

and on a board with S > 1 streams one byte more: 46 S (u8, 2..255) (:data:`STREAMS_OFFSET`), so
47 bytes. A one-stream board sends the 46 bytes (hosts that do not know streams read it as
before; they refuse a 47-byte descriptor as not a gru-hw board).

Replies: CODE = command | 0x80 on success. RUN / RUN_KEEP / READ reply ``O`` outputs of ``yb``
bytes each (little-endian, out_fmt) and a 4-byte cycle count (first input beat accepted to the
output beat). A request the board refuses gets CODE = 0xFF and a 2-byte payload (error, command):
bad CRC, unknown command, wrong length, a frame cut short (no byte for the board's timeout),
weights addressed outside the map, or a stream id out of range (S > 1). The board checks the whole frame before it acts: a refused frame
changes nothing (a refused WEIGHTS frame writes no word and leaves the weights as they were). The
checks are made in this order, the first that fails is reported: CRC, command, length, the stream
id (S > 1), a READ with no result yet, a RUN before the weights are loaded (SPRAM builds), the
weights' address. Bytes that arrive while the board handles a frame (until the
last byte of its reply is on its way) are dropped.

A board whose weights live in SPRAM (``weight_memory`` "spram" in the descriptor's flags) loads
them from its configuration flash at power-up (:mod:`gru_hw.flash_image`); until that load has
passed its CRC check it refuses RUN and RUN_KEEP with "weights not loaded", and IDENTIFY reports
the load's state (``boot_state``: loaded, loading, no image, an image of another build, corrupt).

The weights checksum in IDENTIFY is that running CRC-16: after loading a model region by region
in address order (lane 0, ..., lane P-1, biases), it equals :func:`weights_checksum` of the whole
image; at power-up it is the checksum of the weights the bitstream was built with.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass

import numpy as np
from amaranth.lib import crc as _crc

from .errors import GruHwError
from .fixed import Overflow, QFormat, Rounding

SYNC = 0xA5
MAGIC = b"GRUH"
PROTOCOL_VERSION = 2
DEFAULT_BAUD = 115200

CMD_IDENTIFY = 0x01
CMD_RESET_STATE = 0x02
CMD_RUN = 0x03
CMD_READ = 0x04
CMD_RUN_KEEP = 0x05
CMD_WEIGHTS = 0x06
COMMANDS = (CMD_IDENTIFY, CMD_RESET_STATE, CMD_RUN, CMD_READ, CMD_RUN_KEEP)  # every build
REPLY_OK = 0x80
REPLY_ERROR = 0xFF

ERR_CRC = 0x01
ERR_UNKNOWN_COMMAND = 0x02
ERR_LENGTH = 0x03
ERR_TIMEOUT = 0x04
ERR_NO_RESULT = 0x05
ERR_ADDRESS = 0x06
ERR_NOT_LOADED = 0x07
ERR_STREAM = 0x08
ERROR_NAMES = {
    ERR_CRC: "bad CRC",
    ERR_UNKNOWN_COMMAND: "unknown command",
    ERR_LENGTH: "wrong length",
    ERR_TIMEOUT: "frame cut short (timeout)",
    ERR_NO_RESULT: "no result to read yet",
    ERR_ADDRESS: "weights outside the weight map",
    ERR_NOT_LOADED: "weights not loaded (the flash image is missing, corrupt or still loading)",
    ERR_STREAM: "stream id out of range",
}

#: bytes of a WEIGHTS frame's start address (before the words)
WEIGHTS_ADDRESS_BYTES = 4
#: bytes of the cycle count at the end of a RUN / RUN_KEEP / READ reply
CYCLES_BYTES = 4
#: bytes of a WEIGHTS reply (the weights checksum, little-endian)
WEIGHTS_REPLY_BYTES = 2
#: bytes of an error reply: the error, then the command refused
ERROR_PAYLOAD_BYTES = 2
#: bytes of the stream id before a RUN / RUN_KEEP payload's steps (and of a one-stream
#: RESET_STATE payload) on boards with more than one stream
STREAM_ID_BYTES = 1
#: the most streams a descriptor can announce (one byte)
MAX_LINK_STREAMS = 0xFF

_HEADER = struct.Struct("<BH")  # CODE, LEN (after SYNC)
_TRAILER = struct.Struct(">H")  # CRC, MSB first
HEADER_BYTES = _HEADER.size
CRC_BYTES = _TRAILER.size
#: bytes of a frame besides its payload: SYNC, CODE, LEN, CRC
FRAME_OVERHEAD = 1 + HEADER_BYTES + CRC_BYTES
MAX_PAYLOAD = 0xFFFF


def commands(runtime_weights: bool) -> tuple[int, ...]:
    """Return the command codes a board takes (WEIGHTS only on run-time-weights builds)."""
    return COMMANDS + ((CMD_WEIGHTS,) if runtime_weights else ())


# ---- CRC ---------------------------------------------------------------------------------------
#: The link's CRC-16/CCITT-FALSE for byte-wide data, as ``amaranth.lib.crc`` parameters: the
#: gateware builds its CRC registers from these; :func:`crc16` is the host's implementation.
crc16_parameters: _crc.Parameters = _crc.catalog.CRC16_CCITT_FALSE(data_width=8)


def _crc16_table(params: _crc.Parameters) -> list[int]:
    """Return the byte-at-a-time table of a CRC-16 without reflection or final xor."""
    algo = params.algorithm
    if (algo.crc_width != 16 or algo.reflect_input or algo.reflect_output or algo.xor_output
            or params.data_width != 8):
        raise ValueError(f"the host CRC-16 takes a 16-bit MSB-first CRC without final xor over "
                         f"bytes, not {params!r}")
    algo.initial_crc = 0
    zero_init = algo(8)
    return [zero_init.compute([byte]) for byte in range(256)]


_CRC16_TABLE = _crc16_table(crc16_parameters)
CRC16_INIT = crc16_parameters.algorithm.initial_crc


def crc16(data: bytes, crc: int = CRC16_INIT) -> int:
    """Return the CRC-16/CCITT-FALSE of ``data`` (continuing from ``crc``)."""
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


# ---- frames ------------------------------------------------------------------------------------
class LinkError(GruHwError):
    """The link to the board failed: no reply, a corrupt reply, or the board refused a request."""


def encode_frame(code: int, payload: bytes = b"") -> bytes:
    """Return one frame: SYNC, code, length, payload, CRC."""
    if not 0 <= code <= 0xFF:
        raise ValueError(f"frame code {code} is not a byte")
    if len(payload) > MAX_PAYLOAD:
        raise GruHwError(f"frame payload of {len(payload)} bytes is longer than {MAX_PAYLOAD}")
    body = _HEADER.pack(code, len(payload)) + bytes(payload)
    return bytes([SYNC]) + body + _TRAILER.pack(crc16(body))


def parse_header(head: bytes) -> tuple[int, int]:
    """Return (code, payload length) from the header bytes that follow SYNC."""
    return _HEADER.unpack(head)


def crc_matches(head: bytes, payload: bytes, trailer: bytes) -> bool:
    """Return whether ``trailer`` (the frame's last 2 bytes) is the CRC of header and payload."""
    return crc16(head + payload) == _TRAILER.unpack(trailer)[0]


def decode_frame(frame: bytes) -> tuple[int, bytes]:
    """Return (code, payload) of one whole frame; a malformed frame raises :class:`LinkError`."""
    if len(frame) < FRAME_OVERHEAD or frame[0] != SYNC:
        raise LinkError(f"not a frame: {len(frame)} bytes starting {frame[:1]!r}")
    head = frame[1:1 + HEADER_BYTES]
    code, length = parse_header(head)
    if len(frame) != FRAME_OVERHEAD + length:
        raise LinkError(f"frame 0x{code:02x} of {len(frame)} bytes has a {length}-byte payload")
    payload = frame[1 + HEADER_BYTES:-CRC_BYTES]
    if not crc_matches(head, payload, frame[-CRC_BYTES:]):
        raise LinkError(f"frame 0x{code:02x} has a bad CRC")
    return code, payload


def error_payload(error: int, command: int) -> bytes:
    """Return the payload of an error reply (CODE = :data:`REPLY_ERROR`)."""
    return bytes([error, command])


def parse_error(payload: bytes, command: int) -> tuple[int, int]:
    """Return (error, command) of an error reply; ``command`` stands in for a missing one."""
    return (payload[0] if payload else 0), (payload[1] if len(payload) > 1 else command)


# ---- values on the link ------------------------------------------------------------------------
def byte_width(bits: int) -> int:
    """Return how many bytes a ``bits``-wide value takes on the link."""
    return (bits + 7) // 8


def pack_ints(values: np.ndarray, nbytes: int) -> bytes:
    """Pack signed integers as little-endian two's complement, ``nbytes`` each."""
    out = bytearray()
    mask = (1 << (8 * nbytes)) - 1
    for v in np.asarray(values, dtype=np.int64).ravel():
        out += (int(v) & mask).to_bytes(nbytes, "little")
    return bytes(out)


def unpack_ints(data: bytes, nbytes: int, width: int) -> np.ndarray:
    """Unpack little-endian values of ``nbytes`` each, sign-extended from ``width`` bits."""
    vals = []
    for i in range(0, len(data), nbytes):
        v = int.from_bytes(data[i:i + nbytes], "little") & ((1 << width) - 1)
        vals.append(v - (1 << width) if v >> (width - 1) else v)
    return np.array(vals, dtype=np.int64)


def weights_payload(address: int, words, nbytes: int) -> bytes:
    """Return a WEIGHTS request payload: the start address, then the words (``nbytes`` each)."""
    return address.to_bytes(WEIGHTS_ADDRESS_BYTES, "little") + pack_ints(words, nbytes)


def weights_checksum(words, nbytes: int) -> int:
    """Return the CRC-16 of weight words packed like WEIGHTS frames (``nbytes`` each, LE)."""
    return crc16(pack_ints(np.asarray(list(words), dtype=np.int64), nbytes))


# ---- what the board says it holds ---------------------------------------------------------------
def model_hash(qm, *, weights: bool = True) -> bytes:
    """Return 8 bytes identifying a quantized model: SHA-256 of its formats, shape and weights.

    ``weights=False`` leaves the weights out: what a run-time-weights board reports, since every
    model of that shape and QuantSpec runs on it.
    """
    desc = {
        "spec": qm.spec.to_json(),
        "input_size": qm.input_size,
        "hidden_sizes": qm.hidden_sizes,
        "output_size": qm.output_size,
        "reset_after": bool(qm.reset_after),
    }
    if not weights:
        desc["weights"] = "loaded at run time"
    h = hashlib.sha256(json.dumps(desc, sort_keys=True, separators=(",", ":")).encode())
    if not weights:
        return h.digest()[:8]
    arrays = []
    for q in qm.layers:
        arrays += [q.w_ih, q.w_hh, q.b_ih, q.b_hh]
    if qm.head_w is not None:
        arrays += [qm.head_w, qm.head_b]
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
    return h.digest()[:8]


_ROUNDINGS = list(Rounding)
_OVERFLOWS = list(Overflow)
_DESC = struct.Struct("<4sB8sHHHBbbBbbBBBBBHHIBBIH")
#: bytes of the IDENTIFY reply payload of a one-stream board (S > 1: one byte more, S)
DESCRIPTOR_BYTES = _DESC.size
#: where an S > 1 board's descriptor holds S (after the weights checksum)
STREAMS_OFFSET = _DESC.size
#: the weights checksum is the descriptor's last field (the board fills it in at run time)
WEIGHTS_CRC_OFFSET = _DESC.size - 2
#: the flags byte: bit 0 reset_after, 1 head, 2 run-time weights, 3 weights in SPRAM (loaded from
#: flash at power-up), bits 4..6 the boot state (:mod:`gru_hw.flash_image` BOOT_*)
FLAGS_OFFSET = struct.calcsize(_DESC.format[:_DESC.format.index("I") + 1])  # after clock_hz
BOOT_STATE_SHIFT = 4


@dataclass(frozen=True)
class BoardDescriptor:
    """What IDENTIFY returns: the model a board holds and how to talk to it."""

    model_hash: bytes
    input_size: int
    hidden_size: int  #: of the top layer
    output_size: int
    num_layers: int
    x_fmt: QFormat
    out_fmt: QFormat
    x_rounding: Rounding
    x_overflow: Overflow
    max_steps: int
    lanes: int
    clock_hz: int
    reset_after: bool
    head: bool
    runtime_weights: bool = False
    weight_bytes: int = 0   #: bytes per weight word in WEIGHTS frames
    weight_words: int = 0   #: words in the whole weight image
    weights_crc: int = 0    #: CRC-16 of the weights loaded (see the module docstring)
    version: int = PROTOCOL_VERSION
    spram: bool = False     #: weights in SPRAM, loaded from the board's flash at power-up
    boot_state: int = 0     #: that load's state (gru_hw.flash_image BOOT_*; 0: loaded)
    streams: int = 1        #: interleaved streams, each with its own hidden state (S)

    def __post_init__(self) -> None:
        s = self.streams
        if not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= MAX_LINK_STREAMS:
            raise GruHwError(f"streams must be within 1..{MAX_LINK_STREAMS}, got {s!r}",
                             subject="streams")

    @property
    def stream_bytes(self) -> int:
        """Bytes of the stream id before a RUN / RUN_KEEP payload's steps (0 when S = 1)."""
        return STREAM_ID_BYTES if self.streams > 1 else 0

    @property
    def descriptor_bytes(self) -> int:
        """Bytes of this board's IDENTIFY reply payload."""
        return DESCRIPTOR_BYTES + (1 if self.streams > 1 else 0)

    def check_stream(self, stream) -> int:
        """Return ``stream`` as an int if this board has it; else raise GruHwError naming it."""
        if isinstance(stream, (bool, np.bool_)) or not isinstance(stream, (int, np.integer)):
            raise GruHwError(f"stream id must be an integer, got {stream!r}", subject="stream")
        if not 0 <= int(stream) < self.streams:
            have = ("only stream 0 (it was built with one stream)" if self.streams == 1
                    else f"streams 0..{self.streams - 1}")
            raise GruHwError(f"stream {int(stream)} is out of range: the board serves {have}",
                             subject="stream")
        return int(stream)

    def run_payload(self, xq, stream: int = 0) -> bytes:
        """Return a RUN / RUN_KEEP payload: the stream id (S > 1 only), then the steps."""
        sid = self.check_stream(stream)
        head = sid.to_bytes(STREAM_ID_BYTES, "little") if self.streams > 1 else b""
        return head + pack_ints(xq, self.x_bytes)

    def parse_run_payload(self, payload: bytes) -> tuple[int, np.ndarray]:
        """Return (stream id, steps (T, I)) of a RUN / RUN_KEEP payload (no range checks)."""
        k = self.stream_bytes
        sid = int.from_bytes(payload[:k], "little") if k else 0
        body = payload[k:]
        xq = unpack_ints(body, self.x_bytes, self.x_fmt.width)
        return sid, xq.reshape(-1, self.input_size)

    def reset_payload(self, stream: int | None = None) -> bytes:
        """Return a RESET_STATE payload: empty (every stream), or one stream's id (S > 1)."""
        if stream is None:
            return b""
        sid = self.check_stream(stream)
        return sid.to_bytes(STREAM_ID_BYTES, "little") if self.streams > 1 else b""

    @property
    def x_bytes(self) -> int:
        """Bytes per input value on the link."""
        return byte_width(self.x_fmt.width)

    @property
    def y_bytes(self) -> int:
        """Bytes per output value on the link."""
        return byte_width(self.out_fmt.width)

    @property
    def step_bytes(self) -> int:
        """Bytes per time step in a RUN request."""
        return self.input_size * self.x_bytes

    @property
    def result_bytes(self) -> int:
        """Bytes of a RUN reply: the outputs and a 4-byte cycle count."""
        return self.output_size * self.y_bytes + CYCLES_BYTES

    @property
    def buffer_bytes(self) -> int:
        """The steps of the longest RUN the board takes (its request buffer holds these and,
        with S > 1, the stream id): the longest WEIGHTS payload it takes."""
        return self.max_steps * self.step_bytes

    @property
    def max_run_payload(self) -> int:
        """The longest RUN / RUN_KEEP payload the board takes: stream id and steps."""
        return self.stream_bytes + self.buffer_bytes

    def result_payload(self, y, cycles: int) -> bytes:
        """Return the payload of a RUN / RUN_KEEP / READ reply: outputs, then the cycle count."""
        return pack_ints(y, self.y_bytes) + int(cycles).to_bytes(CYCLES_BYTES, "little")

    def parse_result(self, payload: bytes) -> tuple[np.ndarray, int]:
        """Return (outputs in out_fmt, cycles) of a RUN / RUN_KEEP / READ reply payload."""
        if len(payload) != self.result_bytes:
            raise LinkError(f"result of {len(payload)} bytes, expected {self.result_bytes}")
        n = self.output_size * self.y_bytes
        return (unpack_ints(payload[:n], self.y_bytes, self.out_fmt.width),
                int.from_bytes(payload[n:], "little"))

    @classmethod
    def for_model(cls, qm, *, lanes: int, max_steps: int, clock_hz: int,
                  runtime_weights: bool = False, weight_memory: str = "bram",
                  streams: int = 1) -> "BoardDescriptor":
        """Return the descriptor a board built for ``qm`` answers with (once its weights are
        loaded); ``streams``: its core's S."""
        from .link import weight_map

        mode = qm.spec.mode("x")
        wmap = weight_map(qm, lanes, weight_memory)
        image = [w for _, w in wmap.image()]
        wb = wmap.word_bytes
        return cls(model_hash(qm, weights=not runtime_weights), qm.input_size,
                   qm.hidden_sizes[-1], qm.output_size,
                   len(qm.layers), qm.spec.x_fmt, qm.spec.out_fmt, mode.rounding, mode.overflow,
                   max_steps, lanes, int(clock_hz), bool(qm.reset_after), qm.head_w is not None,
                   bool(runtime_weights), wb, len(image), weights_checksum(image, wb),
                   spram=weight_memory == "spram", streams=streams)

    def to_bytes(self) -> bytes:
        """Return the IDENTIFY reply payload."""
        return _DESC.pack(
            MAGIC, self.version, self.model_hash, self.input_size, self.hidden_size,
            self.output_size, self.num_layers, self.x_fmt.int_bits, self.x_fmt.frac_bits,
            self.x_fmt.width, self.out_fmt.int_bits, self.out_fmt.frac_bits, self.out_fmt.width,
            _ROUNDINGS.index(self.x_rounding), _OVERFLOWS.index(self.x_overflow),
            self.x_bytes, self.y_bytes, self.max_steps, self.lanes, self.clock_hz // 1000,
            int(self.reset_after) | int(self.head) << 1 | int(self.runtime_weights) << 2
            | int(self.spram) << 3 | (self.boot_state & 7) << BOOT_STATE_SHIFT,
            self.weight_bytes, self.weight_words, self.weights_crc,
        ) + (bytes([self.streams]) if self.streams > 1 else b"")

    @classmethod
    def from_bytes(cls, data: bytes) -> "BoardDescriptor":
        """Parse an IDENTIFY reply payload (46 bytes; 47 from a board with S > 1 streams)."""
        if len(data) not in (_DESC.size, _DESC.size + 1) or data[:4] != MAGIC:
            raise LinkError(f"the device did not identify as a gru-hw board "
                            f"({len(data)} bytes, starting {data[:4]!r})")
        f = _DESC.unpack(data[:_DESC.size])
        if f[1] != PROTOCOL_VERSION:
            raise LinkError(f"board speaks link protocol version {f[1]}, this host "
                            f"{PROTOCOL_VERSION}: rebuild and reflash the board")
        streams = data[STREAMS_OFFSET] if len(data) > _DESC.size else 1
        if len(data) > _DESC.size and streams < 2:
            raise LinkError(f"board sent a malformed descriptor (a streams byte of {streams}; "
                            "a one-stream board sends none)")
        try:
            return cls(model_hash=f[2], input_size=f[3], hidden_size=f[4], output_size=f[5],
                       num_layers=f[6], x_fmt=QFormat(f[7], f[8]), out_fmt=QFormat(f[10], f[11]),
                       x_rounding=_ROUNDINGS[f[13]], x_overflow=_OVERFLOWS[f[14]],
                       max_steps=f[17], lanes=f[18], clock_hz=f[19] * 1000,
                       reset_after=bool(f[20] & 1), head=bool(f[20] & 2),
                       runtime_weights=bool(f[20] & 4), weight_bytes=f[21], weight_words=f[22],
                       weights_crc=f[23], version=f[1], spram=bool(f[20] & 8),
                       boot_state=(f[20] >> BOOT_STATE_SHIFT) & 7, streams=streams)
        except (IndexError, GruHwError) as exc:
            raise LinkError(f"board sent a malformed descriptor ({exc})") from None

    def to_json(self) -> dict:
        """Return the JSON-ready form (for report.json)."""
        return {
            "model_hash": self.model_hash.hex(), "input_size": self.input_size,
            "hidden_size": self.hidden_size, "output_size": self.output_size,
            "num_layers": self.num_layers, "x_fmt": self.x_fmt.to_json(),
            "out_fmt": self.out_fmt.to_json(), "max_steps": self.max_steps, "lanes": self.lanes,
            "clock_hz": self.clock_hz, "protocol_version": self.version,
            "runtime_weights": self.runtime_weights, "weight_words": self.weight_words,
            "weight_memory": "spram" if self.spram else "bram",
            "weights_crc16": self.weights_crc, "streams": self.streams,
        }
