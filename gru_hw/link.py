"""The host side of the UART link to a flashed board: framing, CRC, and the client.

Frame (both directions)::

    SYNC (0xA5) | CODE (1) | LEN (2, little-endian) | PAYLOAD (LEN bytes) | CRC (2, MSB first)

CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final xor;
``crc16(b"123456789") == 0x29B1``) over CODE, LEN and PAYLOAD (not SYNC). Sent MSB first, the CRC
of a whole frame after SYNC is 0.

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

Replies: CODE = command | 0x80 on success. RUN / RUN_KEEP / READ reply ``O`` outputs of ``yb``
bytes each (little-endian, out_fmt) and a 4-byte cycle count (first input beat accepted to the
output beat). A request the board refuses gets CODE = 0xFF and a 2-byte payload (error, command):
bad CRC, unknown command, wrong length, a frame cut short (no byte for the board's timeout), or
weights addressed outside the map. The board checks the whole frame before it acts: a refused frame
changes nothing (a refused WEIGHTS frame writes no word and leaves the weights as they were).

The weights checksum in IDENTIFY is that running CRC-16: after loading a model region by region
in address order (lane 0, ..., lane P-1, biases), it equals :func:`weights_checksum` of the whole
image; at power-up it is the checksum of the weights the bitstream was built with.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import GruHwError
from .fixed import Overflow, QFormat, Rounding, quantize, to_float

SYNC = 0xA5
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
ERROR_NAMES = {
    ERR_CRC: "bad CRC",
    ERR_UNKNOWN_COMMAND: "unknown command",
    ERR_LENGTH: "wrong length",
    ERR_TIMEOUT: "frame cut short (timeout)",
    ERR_NO_RESULT: "no result to read yet",
    ERR_ADDRESS: "weights outside the weight map",
}

PROTOCOL_VERSION = 2
MAGIC = b"GRUH"
DEFAULT_BAUD = 115200
_ROUNDINGS = list(Rounding)
_OVERFLOWS = list(Overflow)


# ---- CRC and frames ----------------------------------------------------------------------------
def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """Return the CRC-16/CCITT-FALSE of ``data`` (continuing from ``crc``)."""
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


def encode_frame(code: int, payload: bytes = b"") -> bytes:
    """Return one frame: SYNC, code, length, payload, CRC."""
    if not 0 <= code <= 0xFF:
        raise ValueError(f"frame code {code} is not a byte")
    if len(payload) > 0xFFFF:
        raise GruHwError(f"frame payload of {len(payload)} bytes is longer than 65535")
    body = bytes([code]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([SYNC]) + body + struct.pack(">H", crc16(body))


class LinkError(GruHwError):
    """The link to the board failed: no reply, a corrupt reply, or the board refused a request."""


class BoardRefused(LinkError):
    """The board answered a request with an error frame."""

    def __init__(self, error: int, command: int) -> None:
        self.error = error
        self.command = command
        name = ERROR_NAMES.get(error, f"error 0x{error:02x}")
        super().__init__(f"board refused command 0x{command:02x}: {name}")


class SerialLike(Protocol):
    """What the client needs of a port: pyserial's ``read`` (returns fewer bytes on timeout)."""

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...


def read_frame(port: SerialLike, *, max_skip: int = 1 << 16) -> tuple[int, bytes]:
    """Read one frame from ``port``; return (code, payload). Bytes before SYNC are skipped.

    Raises :class:`LinkError` when the port times out or the CRC is wrong.
    """
    skipped = 0
    while True:
        b = port.read(1)
        if not b:
            raise LinkError("no reply from the board (timeout): is it flashed, and is the port "
                            "and baud rate right?")
        if b[0] == SYNC:
            break
        skipped += 1
        if skipped > max_skip:
            raise LinkError(f"no frame start in {max_skip} bytes from the board")
    head = _read_exact(port, 3, "header")
    code, length = head[0], struct.unpack("<H", head[1:3])[0]
    payload = _read_exact(port, length, "payload")
    crc = _read_exact(port, 2, "CRC")
    if crc16(head + payload) != struct.unpack(">H", crc)[0]:
        raise LinkError(f"reply 0x{code:02x} from the board has a bad CRC")
    return code, payload


def _read_exact(port: SerialLike, n: int, what: str) -> bytes:
    data = b""
    while len(data) < n:
        chunk = port.read(n - len(data))
        if not chunk:
            raise LinkError(f"reply from the board cut short in its {what} "
                            f"({len(data)} of {n} bytes)")
        data += chunk
    return data


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


def byte_width(bits: int) -> int:
    """Return how many bytes a ``bits``-wide value takes on the link."""
    return (bits + 7) // 8


_DESC = struct.Struct("<4sB8sHHHBbbBbbBBBBBHHIBBIH")
#: the weights checksum is the descriptor's last field (the board fills it in at run time)
WEIGHTS_CRC_OFFSET = _DESC.size - 2


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
        return self.output_size * self.y_bytes + 4

    @property
    def buffer_bytes(self) -> int:
        """The board's request buffer: the longest payload it takes."""
        return self.max_steps * self.step_bytes

    @classmethod
    def for_model(cls, qm, *, lanes: int, max_steps: int, clock_hz: int,
                  runtime_weights: bool = False) -> "BoardDescriptor":
        """Return the descriptor a board built for ``qm`` answers with (at power-up)."""
        mode = qm.spec.mode("x")
        wmap = weight_map(qm, lanes)
        image = [w for _, w in wmap.image()]
        wb = wmap.word_bytes
        return cls(model_hash(qm, weights=not runtime_weights), qm.input_size,
                   qm.hidden_sizes[-1], qm.output_size,
                   len(qm.layers), qm.spec.x_fmt, qm.spec.out_fmt, mode.rounding, mode.overflow,
                   max_steps, lanes, int(clock_hz), bool(qm.reset_after), qm.head_w is not None,
                   bool(runtime_weights), wb, len(image), weights_checksum(image, wb))

    def to_bytes(self) -> bytes:
        """Return the IDENTIFY reply payload."""
        return _DESC.pack(
            MAGIC, self.version, self.model_hash, self.input_size, self.hidden_size,
            self.output_size, self.num_layers, self.x_fmt.int_bits, self.x_fmt.frac_bits,
            self.x_fmt.width, self.out_fmt.int_bits, self.out_fmt.frac_bits, self.out_fmt.width,
            _ROUNDINGS.index(self.x_rounding), _OVERFLOWS.index(self.x_overflow),
            self.x_bytes, self.y_bytes, self.max_steps, self.lanes, self.clock_hz // 1000,
            int(self.reset_after) | int(self.head) << 1 | int(self.runtime_weights) << 2,
            self.weight_bytes, self.weight_words, self.weights_crc,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "BoardDescriptor":
        """Parse an IDENTIFY reply payload."""
        if len(data) != _DESC.size or data[:4] != MAGIC:
            raise LinkError(f"the device did not identify as a gru-hw board "
                            f"({len(data)} bytes, starting {data[:4]!r})")
        f = _DESC.unpack(data)
        if f[1] != PROTOCOL_VERSION:
            raise LinkError(f"board speaks link protocol version {f[1]}, this host "
                            f"{PROTOCOL_VERSION}: rebuild and reflash the board")
        try:
            return cls(model_hash=f[2], input_size=f[3], hidden_size=f[4], output_size=f[5],
                       num_layers=f[6], x_fmt=QFormat(f[7], f[8]), out_fmt=QFormat(f[10], f[11]),
                       x_rounding=_ROUNDINGS[f[13]], x_overflow=_OVERFLOWS[f[14]],
                       max_steps=f[17], lanes=f[18], clock_hz=f[19] * 1000,
                       reset_after=bool(f[20] & 1), head=bool(f[20] & 2),
                       runtime_weights=bool(f[20] & 4), weight_bytes=f[21], weight_words=f[22],
                       weights_crc=f[23], version=f[1])
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
            "weights_crc16": self.weights_crc,
        }


def weight_map(qm, lanes: int):
    """Return the weight map (:class:`gru_hw.memory_map.MemoryMap`) of a board of ``lanes`` lanes."""
    from .memory_map import MemoryMap
    from .schedule import Schedule

    return MemoryMap(qm, Schedule(qm, lanes), runtime_weights=True)


def weight_words_of(qm, lanes: int) -> list[int]:
    """Return ``qm``'s weight image for a board of ``lanes`` lanes, in address order."""
    return [w for _, w in weight_map(qm, lanes).image(qm)]


# ---- packing values ------------------------------------------------------------------------------
def pack_ints(values: np.ndarray, nbytes: int) -> bytes:
    """Pack signed integers as little-endian two's complement, ``nbytes`` each."""
    out = bytearray()
    mask = (1 << (8 * nbytes)) - 1
    for v in np.asarray(values, dtype=np.int64).ravel():
        out += (int(v) & mask).to_bytes(nbytes, "little")
    return bytes(out)


def weights_checksum(words, nbytes: int) -> int:
    """Return the CRC-16 of weight words packed like WEIGHTS frames (``nbytes`` each, LE)."""
    return crc16(pack_ints(np.asarray(list(words), dtype=np.int64), nbytes))


def unpack_ints(data: bytes, nbytes: int, width: int) -> np.ndarray:
    """Unpack little-endian values of ``nbytes`` each, sign-extended from ``width`` bits."""
    vals = []
    for i in range(0, len(data), nbytes):
        v = int.from_bytes(data[i:i + nbytes], "little") & ((1 << width) - 1)
        vals.append(v - (1 << width) if v >> (width - 1) else v)
    return np.array(vals, dtype=np.int64)


# ---- the client ----------------------------------------------------------------------------------
@dataclass
class RunResult:
    """One sequence's reply: outputs in out_fmt (integers) and the board's cycle count."""

    y: np.ndarray
    cycles: int


class BoardClient:
    """Talk to a flashed board over ``port`` (a pyserial ``Serial`` or anything with read/write).

    ``expect`` (a QuantModel) makes :meth:`identify` refuse a board that holds a different model
    (on a run-time-weights board: another shape or QuantSpec, or, unless ``loading`` is set because
    the caller is about to :meth:`load_weights`, other weights).
    """

    def __init__(self, port: SerialLike, *, expect=None, retries: int = 0,
                 loading: bool = False) -> None:
        self.port = port
        self.expect = expect
        self.retries = retries
        self.loading = loading
        self.descriptor: BoardDescriptor | None = None

    def request(self, code: int, payload: bytes = b"") -> bytes:
        """Send one request and return the reply payload; error replies raise BoardRefused."""
        self.port.write(encode_frame(code, payload))
        rcode, rpayload = read_frame(self.port)
        if rcode == REPLY_ERROR:
            err = rpayload[0] if rpayload else 0
            cmd = rpayload[1] if len(rpayload) > 1 else code
            raise BoardRefused(err, cmd)
        if rcode != (code | REPLY_OK):
            raise LinkError(f"board answered 0x{rcode:02x} to command 0x{code:02x}")
        return rpayload

    def identify(self) -> BoardDescriptor:
        """Ask the board what it holds; check it against ``expect`` when given."""
        desc = self.identify_raw()
        if self.expect is not None:
            want = model_hash(self.expect, weights=not desc.runtime_weights)
            if desc.model_hash != want:
                what = ("shape or formats (a run-time-weights board takes models of the shape and "
                        "QuantSpec it was built for: pass --build-dir so its formats are used)"
                        if desc.runtime_weights else "model")
                raise GruHwError(
                    f"the board holds a different {what} (hash {desc.model_hash.hex()}, "
                    f"{desc.input_size}->{desc.hidden_size}->{desc.output_size}, "
                    f"{desc.num_layers} layer(s)) than the one given (hash {want.hex()}): "
                    "rebuild and flash, or pass the model the board was built for")
            if desc.runtime_weights and not self.loading:
                crc = weights_checksum(weight_words_of(self.expect, desc.lanes), desc.weight_bytes)
                if crc != desc.weights_crc:
                    raise GruHwError(
                        f"the board holds other weights (checksum 0x{desc.weights_crc:04x}) than "
                        f"the model given (0x{crc:04x}): load them with --load-weights")
        self.descriptor = desc
        return desc

    def load_weights(self, qm, *, progress=None) -> int:
        """Write ``qm``'s weights into a run-time-weights board; return the board's checksum.

        The image goes region by region in address order, in frames that fit the board's
        buffer; the board's checksum is then read back and must equal the image's.
        """
        d = self._desc()
        if not d.runtime_weights:
            raise GruHwError("the board was built without --runtime-weights: its weights are in "
                             "the bitstream (rebuild with --runtime-weights to load weights)")
        want = model_hash(qm, weights=False)
        if d.model_hash != want:
            raise GruHwError(f"the model's shape or formats (hash {want.hex()}) are not the "
                             f"board's ({d.model_hash.hex()})")
        regions = [(r.base, r.words) for r in weight_map(qm, d.lanes).regions(qm)]
        wb = d.weight_bytes
        per_frame = max(1, (min(d.buffer_bytes, 0xFFFF) - 4) // wb)
        frames = [(base + i, words[i:i + per_frame]) for base, words in regions
                  for i in range(0, len(words), per_frame)]
        crc = None
        for k, (addr, words) in enumerate(frames):
            reply = self.request(CMD_WEIGHTS, struct.pack("<I", addr) + pack_ints(words, wb))
            if len(reply) != 2:
                raise LinkError(f"WEIGHTS reply of {len(reply)} bytes, expected 2")
            crc = struct.unpack("<H", reply)[0]
            if progress is not None:
                progress(k + 1, len(frames))
        image = [w for _, words in regions for w in words]
        want_crc = weights_checksum(image, wb)
        d = self.identify_raw()
        if crc != want_crc or d.weights_crc != want_crc:
            raise LinkError(f"weights checksum after loading is 0x{d.weights_crc:04x}, expected "
                            f"0x{want_crc:04x}: the load did not complete, run it again")
        self.descriptor = d
        return d.weights_crc

    def identify_raw(self) -> BoardDescriptor:
        """Ask the board what it holds, without checking it against ``expect``."""
        return BoardDescriptor.from_bytes(self.request(CMD_IDENTIFY))

    def _desc(self) -> BoardDescriptor:
        return self.descriptor if self.descriptor is not None else self.identify()

    def reset_state(self) -> None:
        """Clear the core's hidden state."""
        self.request(CMD_RESET_STATE)

    def run_sequence(self, xq: np.ndarray, *, keep_state: bool = False) -> RunResult:
        """Run one sequence of quantized inputs (T, I) in x_fmt; return its outputs."""
        d = self._desc()
        xq = np.asarray(xq, dtype=np.int64)
        if xq.ndim != 2 or xq.shape[1] != d.input_size:
            raise GruHwError(f"sequence must be (T, {d.input_size}), got shape {xq.shape}")
        if not 1 <= xq.shape[0] <= d.max_steps:
            raise GruHwError(f"sequence has {xq.shape[0]} steps; the board takes 1..{d.max_steps} "
                             "(rebuild with a larger max_steps)")
        if xq.min() < d.x_fmt.min_int or xq.max() > d.x_fmt.max_int:
            raise GruHwError(f"sequence values are outside x_fmt {d.x_fmt}")
        return self._result(self.request(CMD_RUN_KEEP if keep_state else CMD_RUN,
                                         pack_ints(xq, d.x_bytes)))

    def read_result(self) -> RunResult:
        """Read the last sequence's reply again."""
        return self._result(self.request(CMD_READ))

    def _result(self, payload: bytes) -> RunResult:
        d = self._desc()
        if len(payload) != d.result_bytes:
            raise LinkError(f"result of {len(payload)} bytes, expected {d.result_bytes}")
        n = d.output_size * d.y_bytes
        return RunResult(unpack_ints(payload[:n], d.y_bytes, d.out_fmt.width),
                         struct.unpack("<I", payload[n:])[0])

    def run(self, x: np.ndarray, lengths: np.ndarray | None = None, *, keep_state: bool = False,
            progress=None) -> dict:
        """Quantize float inputs (N, T, I) like the host golden model and run every sequence.

        Returns ``y`` (float, out_fmt values), ``yq`` (integers) and ``cycles`` (N,).
        """
        d = self._desc()
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        n, t, _ = x.shape
        lengths = np.full(n, t, dtype=np.int64) if lengths is None else np.asarray(lengths)
        xq, _ = quantize(x, d.x_fmt, d.x_rounding, d.x_overflow)
        ys, cycles = [], []
        for i in range(n):
            r = self.run_sequence(xq[i, :lengths[i]], keep_state=keep_state)
            ys.append(r.y)
            cycles.append(r.cycles)
            if progress is not None:
                progress(i + 1, n)
        yq = np.stack(ys)
        return {"yq": yq, "y": to_float(yq, d.out_fmt), "cycles": np.array(cycles, dtype=np.int64),
                "xq": xq, "lengths": lengths}


def open_port(device: str, baud: int = DEFAULT_BAUD, timeout: float = 2.0):
    """Open a serial port with pyserial; a missing or busy device raises GruHwError."""
    try:
        import serial  # pyserial
    except ImportError:  # pragma: no cover - a dependency
        raise GruHwError("pyserial is not installed: pip install pyserial") from None
    try:
        port = serial.Serial(device, baudrate=baud, timeout=timeout)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise GruHwError(f"--port {device}: cannot open ({exc})") from None
    time.sleep(0.05)
    port.reset_input_buffer()
    return port
