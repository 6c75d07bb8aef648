"""A simulation job: the beats to send, the beats to expect and how to stress the handshakes.

The runner writes a job into the test's folder (``job.json`` + ``job.npz``); the cocotb testbench
(:mod:`gru_hw.sim.gru_tb`) reads it, runs it and writes ``results.json`` + ``results.npz`` beside it.
Everything is integers: payloads are packed and unpacked here, with the core's port contract:

    i_stream.payload = {x: I x signed(x_width), first: 1, last: 1, [stream]}   x[0] lowest
    o_stream.payload = {y: O x signed(out_width), [y_head: O_head x signed(head_width)], last: 1,
                        [stream]}

``stream`` (cores with S > 1 interleaved streams) is the beat's stream id, ``stream_width`` bits
right after ``last``. A job then carries each input beat's stream and each expected output beat's
stream; the bench checks every output beat against the next output due on its stream.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

JOB_JSON = "job.json"
JOB_NPZ = "job.npz"
RESULTS_JSON = "results.json"
RESULTS_NPZ = "results.npz"


@dataclass(frozen=True)
class PortLayout:
    """Bit layout of both stream payloads.

    ``head_outputs`` > 0 when the output beats also carry ``y_head`` (sequence mode with a dense
    head): ``{y: O x signed(out_width), y_head: O_head x signed(head_width), last: 1}``.
    """

    inputs: int
    x_width: int
    outputs: int
    out_width: int
    head_outputs: int = 0
    head_width: int = 0
    w_addr_width: int = 0  # the weight port (run-time weights), 0 when the core has none
    w_data_width: int = 0
    stream_width: int = 0  # bits of the stream id after `last` on both payloads (S > 1), else 0

    @property
    def in_width(self) -> int:
        """Width of i_stream.payload."""
        return self.inputs * self.x_width + 2 + self.stream_width

    @property
    def out_total_width(self) -> int:
        """Width of o_stream.payload."""
        return (self.outputs * self.out_width + self.head_outputs * self.head_width + 1
                + self.stream_width)

    @property
    def max_streams(self) -> int:
        """The most streams the stream field can name (1 without one)."""
        return 1 << self.stream_width

    def pack_input(self, x: np.ndarray, first: bool, last: bool, stream: int = 0) -> int:
        """Return the i_stream payload of one beat as an unsigned integer."""
        mask = (1 << self.x_width) - 1
        v = 0
        for i, xi in enumerate(x):
            v |= (int(xi) & mask) << (i * self.x_width)
        v |= int(bool(first)) << (self.inputs * self.x_width)
        v |= int(bool(last)) << (self.inputs * self.x_width + 1)
        stream = int(stream)
        if not 0 <= stream < self.max_streams:
            raise ValueError(f"stream id {stream} does not fit the payload's "
                             f"{self.stream_width}-bit stream field")
        v |= stream << (self.inputs * self.x_width + 2)
        return v

    def pack_weight(self, addr: int, word: int, last: bool) -> int:
        """Return the w_stream payload {addr, data, last} of one weight beat."""
        aw, dw = self.w_addr_width, self.w_data_width
        return (int(addr) | (int(word) & ((1 << dw) - 1)) << aw) | int(bool(last)) << (aw + dw)

    def unpack_output(self, v: int) -> tuple[list[int], list[int], int]:
        """Return (y, y_head, last) of one o_stream payload, values as signed integers."""
        ys = _signed_fields(v, 0, self.outputs, self.out_width)
        base = self.outputs * self.out_width
        yh = _signed_fields(v, base, self.head_outputs, self.head_width)
        return ys, yh, (v >> (base + self.head_outputs * self.head_width)) & 1

    def unpack_stream(self, v: int) -> int:
        """Return the stream id of one o_stream payload (0 without a stream field)."""
        lsb = self.outputs * self.out_width + self.head_outputs * self.head_width + 1
        return (v >> lsb) & ((1 << self.stream_width) - 1)

    @classmethod
    def from_ports(cls, ports: list[dict]) -> "PortLayout":
        """Read the layout from spec.json's ``ports``, checking that it is the contract's.

        Each payload port has ``fields`` (name -> [lsb, width]) and ``arrays`` (name -> count,
        width, signed). Raises ValueError naming the field when the layout differs.
        """
        by_name = {p["name"]: p for p in ports}

        def array(port: str, name: str, lsb: int) -> tuple[int, int]:
            p = by_name[port]
            if name not in p.get("arrays", {}):
                raise ValueError(f"{port}: no array field {name!r}")
            a = p["arrays"][name]
            count, width = int(a["count"]), int(a["width"])
            if list(p["fields"][name]) != [lsb, count * width] or not a.get("signed", True):
                raise ValueError(f"{port}.{name}: at {p['fields'][name]}, expected "
                                 f"[{lsb}, {count * width}] signed")
            return count, width

        def bit(port: str, name: str, lsb: int) -> None:
            got = list(by_name[port]["fields"].get(name, []))
            if got != [lsb, 1]:
                raise ValueError(f"{port}.{name}: at {got}, expected [{lsb}, 1]")

        def stream_field(port: str, lsb: int) -> int:
            got = by_name[port]["fields"].get("stream")
            if got is None:
                return 0
            if int(got[0]) != lsb or int(got[1]) < 1:
                raise ValueError(f"{port}.stream: at {list(got)}, expected [{lsb}, width >= 1]")
            return int(got[1])

        n_in, xw = array("i_stream__payload", "x", 0)
        bit("i_stream__payload", "first", n_in * xw)
        bit("i_stream__payload", "last", n_in * xw + 1)
        sw = stream_field("i_stream__payload", n_in * xw + 2)
        n_out, ow = array("o_stream__payload", "y", 0)
        n_head = hw = 0
        if "y_head" in by_name["o_stream__payload"]["fields"]:
            n_head, hw = array("o_stream__payload", "y_head", n_out * ow)
        bit("o_stream__payload", "last", n_out * ow + n_head * hw)
        sw_out = stream_field("o_stream__payload", n_out * ow + n_head * hw + 1)
        if sw_out != sw:
            raise ValueError(f"o_stream__payload.stream: {sw_out} bits, i_stream__payload's "
                             f"has {sw}")
        w_aw = w_dw = 0
        if "w_stream__payload" in by_name:
            f = by_name["w_stream__payload"]["fields"]
            w_aw, w_dw = int(f["addr"][1]), int(f["data"][1])
            want = {"addr": [0, w_aw], "data": [w_aw, w_dw], "last": [w_aw + w_dw, 1]}
            if {k: list(v) for k, v in f.items()} != want:
                raise ValueError(f"w_stream__payload: fields {f}, expected {want}")
        layout = cls(n_in, xw, n_out, ow, n_head, hw, w_aw, w_dw, sw)
        for port, width in (("i_stream__payload", layout.in_width),
                            ("o_stream__payload", layout.out_total_width)):
            if int(by_name[port]["width"]) != width:
                raise ValueError(f"{port}: {by_name[port]['width']} bits, expected {width}")
        return layout


def _signed_fields(v: int, lsb: int, count: int, width: int) -> list[int]:
    if count == 0:
        return []
    mask, half = (1 << width) - 1, 1 << (width - 1)
    out = []
    for j in range(count):
        u = (v >> (lsb + j * width)) & mask
        out.append(u - (1 << width) if u & half else u)
    return out


def pause_generator(spec: dict | list | None) -> Iterator[bool]:
    """Return an endless pause generator (True = pause this cycle), cocotbext-axi style.

    ``None``: never pause; a list such as ``[1, 1, 1, 0]``: that pattern, cycled;
    ``{"random": p, "seed": s}``: pause with probability p.
    """
    if spec is None:
        return itertools.repeat(False)
    if isinstance(spec, (list, tuple)):
        return itertools.cycle(bool(v) for v in spec)
    if isinstance(spec, dict) and "random" in spec:
        rnd = random.Random(spec.get("seed", 0))
        p = float(spec["random"])
        return (rnd.random() < p for _ in itertools.count())
    raise ValueError(f"unknown pause pattern {spec!r}")


@dataclass
class Options:
    """How the testbench stresses the core."""

    idle: dict | list | None = None          # pauses of i_stream.valid between beats
    backpressure: dict | list | None = None  # pauses of o_stream.ready
    reset_after_beats: int | None = None     # assert rst after this many input beats, then rerun
    reset_delay: int = 3                     # cycles between that beat and rst
    reset_cycles: int = 4                    # rst held this long
    stall_cycles: int = 100_000              # no handshake for this long = hung core
    clock_ns: int = 10
    label: str = ""


@dataclass
class Job:
    """Input beats in order and the output beats expected for them.

    With several streams (``streams`` > 1) the beats of the streams' sequences are interleaved
    (``beat_stream``: each input beat's stream) and the expected outputs are in the order their
    steps are sent (``exp_stream``: each one's stream): the bench matches every output beat with
    the next output due on the stream it names, and that must be the next output due overall.
    """

    layout: PortLayout
    x: np.ndarray            # (B, I) int64
    first: np.ndarray        # (B,) bool
    last: np.ndarray         # (B,) bool
    beat_seq: np.ndarray     # (B,) sequence of each input beat
    exp_y: np.ndarray        # (E, O) int64
    exp_last: np.ndarray     # (E,) bool
    exp_seq: np.ndarray      # (E,) sequence of each expected output beat
    exp_step: np.ndarray     # (E,) step of each expected output beat
    exp_head: np.ndarray     # (E, O_head) int64: y_head expected (sequence mode with a head)
    exp_head_valid: np.ndarray  # (E,) bool: compare y_head on this beat (the last of a sequence)
    sequences: int
    options: Options = field(default_factory=Options)
    w_addr: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    w_data: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # weight words written through w_stream (one packet) after the first reset, before any input
    streams: int = 1
    beat_stream: np.ndarray | None = None  # (B,) stream of each input beat (None: all 0)
    exp_stream: np.ndarray | None = None   # (E,) stream of each expected output beat

    def __post_init__(self) -> None:
        if self.beat_stream is None:
            self.beat_stream = np.zeros(len(self.x), dtype=np.int64)
        if self.exp_stream is None:
            self.exp_stream = np.zeros(len(self.exp_y), dtype=np.int64)

    def save(self, folder: str | Path) -> None:
        """Write job.json and job.npz into folder."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"layout": asdict(self.layout), "sequences": self.sequences,
                "streams": self.streams, "options": asdict(self.options)}
        (d / JOB_JSON).write_text(json.dumps(meta, indent=1))
        np.savez(d / JOB_NPZ, x=self.x, first=self.first, last=self.last, beat_seq=self.beat_seq,
                 exp_y=self.exp_y, exp_last=self.exp_last, exp_seq=self.exp_seq,
                 exp_step=self.exp_step, exp_head=self.exp_head,
                 exp_head_valid=self.exp_head_valid, w_addr=self.w_addr, w_data=self.w_data,
                 beat_stream=self.beat_stream, exp_stream=self.exp_stream)

    @classmethod
    def load(cls, folder: str | Path) -> "Job":
        """Read a job written by :meth:`save`."""
        d = Path(folder)
        meta = json.loads((d / JOB_JSON).read_text())
        with np.load(d / JOB_NPZ) as a:
            arrays = {k: a[k] for k in a.files}
        return cls(layout=PortLayout(**meta["layout"]), sequences=meta["sequences"],
                   streams=int(meta.get("streams", 1)), options=Options(**meta["options"]),
                   **arrays)


def make_job(layout: PortLayout, xq: np.ndarray, lengths: np.ndarray, *, y: np.ndarray | None,
             h: np.ndarray | None = None, sequence: bool = False, keep_state: bool = False,
             options: Options | None = None, weights=None, streams: int = 1, stream_of=None,
             order: str = "round_robin", order_seed: int = 0) -> Job:
    """Build a job: one beat per step; expect ``y[n]`` per sequence, or ``h[n, t]`` per step.

    ``first`` is set on the first step of every sequence, or with ``keep_state`` only on the first
    step of the whole stream (the state carries over from one sequence to the next). In sequence
    mode with ``layout.head_outputs``, the last beat of sequence n must also carry
    ``y_head = y[n]``. ``weights`` (address, word) pairs are loaded through the weight port first.

    ``streams`` S > 1 (the core's payloads need a stream field): sequence n runs on stream
    ``stream_of[n]`` (default n % S) and the beats are sent in the interleaving ``order``
    (:func:`gru_hw.streams.interleave`, ``order_seed`` for "random"); with ``keep_state``
    ``first`` is set only on the first step of each stream's first sequence. ``y`` / ``h`` are
    then the per-stream golden outputs (:func:`gru_hw.streams.golden_streams`). The outputs are
    expected in the order their steps are sent.
    """
    from ..streams import assign_streams, interleave

    xq = np.asarray(xq, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    n = xq.shape[0]
    nh = layout.head_outputs
    streams = int(streams)
    if streams < 1:
        raise ValueError(f"streams must be at least 1, got {streams}")
    if streams > layout.max_streams:
        raise ValueError(f"{streams} streams, but the core's payloads have "
                         + (f"a {layout.stream_width}-bit stream field" if layout.stream_width
                            else "no stream field (a core built for one stream)"))
    sid = assign_streams(n, streams, stream_of)
    beats = interleave(lengths, sid, order=order if streams > 1 else "blocks", seed=order_seed)
    first_of_stream: dict[int, int] = {}
    for s in range(n):
        first_of_stream.setdefault(int(sid[s]), s)
    rows, first, last, beat_seq, beat_stream = [], [], [], [], []
    ey, eh, ehv, elast, eseq, estep, estream = [], [], [], [], [], [], []
    for s, t in beats:
        ln = int(lengths[s])
        st = int(sid[s])
        rows.append(xq[s, t])
        first.append(t == 0 and (not keep_state or first_of_stream[st] == s))
        last.append(t == ln - 1)
        beat_seq.append(s)
        beat_stream.append(st)
        if sequence or t == ln - 1:
            tail = sequence and t == ln - 1 and nh > 0
            ey.append(h[s, t] if sequence else y[s])
            eh.append(y[s] if tail else np.zeros(nh, dtype=np.int64))
            ehv.append(tail)
            elast.append(t == ln - 1)
            eseq.append(s)
            estep.append(t)
            estream.append(st)
    e = len(ey)
    weights = list(weights or [])
    if weights and not layout.w_addr_width:
        raise ValueError("weights given, but the core has no weight port")
    return Job(w_addr=np.array([a for a, _ in weights], dtype=np.int64),
               w_data=np.array([w for _, w in weights], dtype=np.int64), layout=layout,
               x=np.array(rows, dtype=np.int64).reshape(-1, xq.shape[2]),
               first=np.array(first, dtype=bool), last=np.array(last, dtype=bool),
               beat_seq=np.array(beat_seq, dtype=np.int64),
               exp_y=np.array(ey, dtype=np.int64).reshape(e, -1),
               exp_last=np.array(elast, dtype=bool),
               exp_seq=np.array(eseq, dtype=np.int64), exp_step=np.array(estep, dtype=np.int64),
               exp_head=np.array(eh, dtype=np.int64).reshape(e, nh),
               exp_head_valid=np.array(ehv, dtype=bool), sequences=n,
               options=options or Options(), streams=streams,
               beat_stream=np.array(beat_stream, dtype=np.int64),
               exp_stream=np.array(estream, dtype=np.int64))
