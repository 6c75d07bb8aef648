"""The host side of the UART link to a flashed board: reading frames, and the client.

The protocol itself (codes, frame layout, CRC, descriptor, model hash) is :mod:`gru_hw.protocol`,
shared with the board gateware (``gru_hw.boards.link``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import GruHwError
from .fixed import quantize, to_float
from .protocol import (
    CMD_IDENTIFY, CMD_READ, CMD_RESET_STATE, CMD_RUN, CMD_RUN_KEEP, CMD_WEIGHTS, CRC_BYTES,
    DEFAULT_BAUD, ERROR_NAMES, HEADER_BYTES, MAX_PAYLOAD, REPLY_ERROR, REPLY_OK, SYNC,
    WEIGHTS_ADDRESS_BYTES, WEIGHTS_REPLY_BYTES, BoardDescriptor, LinkError, crc_matches,
    encode_frame, model_hash, parse_error, parse_header, weights_checksum,
    weights_payload,
)


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
    head = _read_exact(port, HEADER_BYTES, "header")
    code, length = parse_header(head)
    payload = _read_exact(port, length, "payload")
    crc = _read_exact(port, CRC_BYTES, "CRC")
    if not crc_matches(head, payload, crc):
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


# ---- the weight map ----------------------------------------------------------------------------
def weight_map(qm, lanes: int, weight_memory: str = "bram"):
    """Return the weight map (:class:`gru_hw.memory_map.MemoryMap`) of a board of ``lanes`` lanes
    whose weights are in ``weight_memory`` ("bram", or "spram": packed rows)."""
    from .memory_map import MemoryMap
    from .schedule import Schedule

    return MemoryMap(qm, Schedule(qm, lanes), runtime_weights=True, weight_memory=weight_memory)


def weight_words_of(qm, lanes: int, weight_memory: str = "bram") -> list[int]:
    """Return ``qm``'s weight image for a board of ``lanes`` lanes, in address order."""
    return [w for _, w in weight_map(qm, lanes, weight_memory).image(qm)]


def _memory(desc: BoardDescriptor) -> str:
    return "spram" if desc.spram else "bram"


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

    A board built with S > 1 streams (``descriptor.streams``) keeps a hidden state per stream:
    :meth:`run_sequence` and :meth:`run` take ``stream=`` (default 0), and a ``keep_state`` run
    continues that stream's own state; :meth:`reset_state` resets every stream or one. A stream
    the board does not have raises GruHwError naming it, before anything is sent.
    """

    #: IDENTIFY requests made while a board says it is still loading its weights from flash
    #: (each a round trip of a few milliseconds; the load takes well under a second)
    BOOT_POLLS = 200

    def __init__(self, port: SerialLike, *, expect=None, retries: int = 0,
                 loading: bool = False, boot_polls: int | None = None) -> None:
        self.port = port
        self.expect = expect
        self.retries = retries
        self.loading = loading
        self.boot_polls = self.BOOT_POLLS if boot_polls is None else boot_polls
        self.descriptor: BoardDescriptor | None = None

    def request(self, code: int, payload: bytes = b"") -> bytes:
        """Send one request and return the reply payload; error replies raise BoardRefused."""
        self.port.write(encode_frame(code, payload))
        rcode, rpayload = read_frame(self.port)
        if rcode == REPLY_ERROR:
            raise BoardRefused(*parse_error(rpayload, code))
        if rcode != (code | REPLY_OK):
            raise LinkError(f"board answered 0x{rcode:02x} to command 0x{code:02x}")
        return rpayload

    def identify(self) -> BoardDescriptor:
        """Ask the board what it holds; check it against ``expect`` when given.

        A board whose weights failed to load from its flash (or are still loading) raises
        GruHwError saying so, whatever ``expect``.
        """
        from .flash_image import BOOT_LOADING, BOOT_STATE_NAMES

        desc = self.identify_raw()
        for _ in range(self.boot_polls):  # a board just powered up may still be loading
            if not (desc.spram and desc.boot_state == BOOT_LOADING):
                break
            desc = self.identify_raw()
        if desc.spram and desc.boot_state != 0:
            state = BOOT_STATE_NAMES.get(desc.boot_state, f"state {desc.boot_state}")
            if desc.boot_state == BOOT_LOADING:
                raise GruHwError("the board is still loading its weights from flash: try again "
                                 "in a moment")
            raise GruHwError(f"the board's weights did not load from its flash ({state}): "
                             "write the build's weight image with gru-hw flash")
        if self.expect is not None:
            want = model_hash(self.expect, weights=not desc.runtime_weights)
            if desc.model_hash != want:
                what = ("shape or formats (a run-time-weights board takes models of the shape and "
                        "QuantSpec it was built for: quantize with the build's formats)"
                        if desc.runtime_weights else "model")
                raise GruHwError(
                    f"the board holds a different {what} (hash {desc.model_hash.hex()}, "
                    f"{desc.input_size}->{desc.hidden_size}->{desc.output_size}, "
                    f"{desc.num_layers} layer(s)) than the one given (hash {want.hex()}): "
                    "rebuild and flash, or pass the model the board was built for")
            if desc.runtime_weights and not self.loading:
                crc = weights_checksum(weight_words_of(self.expect, desc.lanes, _memory(desc)),
                                       desc.weight_bytes)
                if crc != desc.weights_crc:
                    raise GruHwError(
                        f"the board holds other weights (checksum 0x{desc.weights_crc:04x}) than "
                        f"the model given (0x{crc:04x}): load them first", subject="load_weights")
        self.descriptor = desc
        return desc

    def load_weights(self, qm, *, progress=None) -> int:
        """Write ``qm``'s weights into a run-time-weights board; return the board's checksum.

        The image goes region by region in address order, in frames that fit the board's
        buffer; the board's checksum is then read back and must equal the image's.
        """
        d = self._desc()
        if not d.runtime_weights:
            raise GruHwError("the board was built without run-time weights: its weights are in "
                             "the bitstream (rebuild it with run-time weights to load weights)")
        want = model_hash(qm, weights=False)
        if d.model_hash != want:
            raise GruHwError(f"the model's shape or formats (hash {want.hex()}) are not the "
                             f"board's ({d.model_hash.hex()})")
        regions = [(r.base, r.words) for r in weight_map(qm, d.lanes, _memory(d)).regions(qm)]
        wb = d.weight_bytes
        per_frame = max(1, (min(d.buffer_bytes, MAX_PAYLOAD) - WEIGHTS_ADDRESS_BYTES) // wb)
        frames = [(base + i, words[i:i + per_frame]) for base, words in regions
                  for i in range(0, len(words), per_frame)]
        crc = None
        for k, (addr, words) in enumerate(frames):
            reply = self.request(CMD_WEIGHTS, weights_payload(addr, words, wb))
            if len(reply) != WEIGHTS_REPLY_BYTES:
                raise LinkError(f"WEIGHTS reply of {len(reply)} bytes, expected "
                                f"{WEIGHTS_REPLY_BYTES}")
            crc = int.from_bytes(reply, "little")
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

    def reset_state(self, stream: int | None = None) -> None:
        """Clear the core's hidden state: of every stream (``stream`` None), or of ``stream``
        only (the next ``keep_state`` run on it starts from zero; the others keep theirs)."""
        if stream is None:
            self.request(CMD_RESET_STATE)
        else:
            self.request(CMD_RESET_STATE, self._desc().reset_payload(stream))

    def run_sequence(self, xq: np.ndarray, *, keep_state: bool = False,
                     stream: int = 0) -> RunResult:
        """Run one sequence of quantized inputs (T, I) in x_fmt on ``stream``; return its outputs.

        ``keep_state``: start from the state the stream's last sequence left (from zero after
        power-up or a reset of the stream).
        """
        d = self._desc()
        stream = d.check_stream(stream)
        xq = np.asarray(xq, dtype=np.int64)
        if xq.ndim != 2 or xq.shape[1] != d.input_size:
            raise GruHwError(f"sequence must be (T, {d.input_size}), got shape {xq.shape}")
        if not 1 <= xq.shape[0] <= d.max_steps:
            raise GruHwError(f"sequence has {xq.shape[0]} steps; the board takes 1..{d.max_steps} "
                             "(rebuild with a larger max_steps)")
        if xq.min() < d.x_fmt.min_int or xq.max() > d.x_fmt.max_int:
            raise GruHwError(f"sequence values are outside x_fmt {d.x_fmt}")
        return self._result(self.request(CMD_RUN_KEEP if keep_state else CMD_RUN,
                                         d.run_payload(xq, stream)))

    def read_result(self) -> RunResult:
        """Read the last sequence's reply again."""
        return self._result(self.request(CMD_READ))

    def _result(self, payload: bytes) -> RunResult:
        return RunResult(*self._desc().parse_result(payload))

    def run(self, x: np.ndarray, lengths: np.ndarray | None = None, *, keep_state: bool = False,
            progress=None, stream=0) -> dict:
        """Quantize float inputs (N, T, I) like the host golden model and run every sequence.

        ``stream``: the stream every sequence runs on, or one stream id per sequence (N,) (for
        instance :func:`gru_hw.streams.assign_streams`: sequences dealt to S streams in order);
        with ``keep_state`` each sequence continues its stream's state.
        Returns ``y`` (float, out_fmt values), ``yq`` (integers), ``cycles`` (N,) and ``stream``
        (N,).
        """
        d = self._desc()
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        n, t, _ = x.shape
        lengths = np.full(n, t, dtype=np.int64) if lengths is None else np.asarray(lengths)
        if np.ndim(stream) == 0:
            sid = [d.check_stream(stream)] * n
        else:
            sid = list(np.asarray(stream).ravel())
            if len(sid) != n:
                raise GruHwError(f"{len(sid)} stream ids for {n} sequences", subject="stream")
            sid = [d.check_stream(s) for s in sid]
        xq, _ = quantize(x, d.x_fmt, d.x_rounding, d.x_overflow)
        ys, cycles = [], []
        for i in range(n):
            r = self.run_sequence(xq[i, :lengths[i]], keep_state=keep_state, stream=sid[i])
            ys.append(r.y)
            cycles.append(r.cycles)
            if progress is not None:
                progress(i + 1, n)
        yq = np.stack(ys)
        return {"yq": yq, "y": to_float(yq, d.out_fmt), "cycles": np.array(cycles, dtype=np.int64),
                "xq": xq, "lengths": lengths, "stream": np.array(sid, dtype=np.int64)}


def open_port(device: str, baud: int = DEFAULT_BAUD, timeout: float = 2.0):
    """Open a serial port with pyserial; a missing or busy device raises GruHwError."""
    try:
        import serial  # pyserial
    except ImportError:  # pragma: no cover - a dependency
        raise GruHwError("pyserial is not installed: pip install pyserial") from None
    try:
        port = serial.Serial(device, baudrate=baud, timeout=timeout)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise GruHwError(f"{device}: cannot open the serial port ({exc})",
                         subject="port") from None
    time.sleep(0.05)
    port.reset_input_buffer()
    return port
