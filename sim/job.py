"""A simulation job: the beats to send, the beats to expect and how to stress the handshakes.

The runner writes a job into the test's folder (``job.json`` + ``job.npz``); the cocotb testbench
(:mod:`sim.gru_tb`) reads it, runs it and writes ``results.json`` + ``results.npz`` beside it.
Everything is integers: payloads are packed and unpacked here, with the core's port contract:

    i_stream.payload = {x: I x signed(x_width), first: 1, last: 1}   x[0] in the lowest bits
    o_stream.payload = {y: O x signed(out_width), last: 1}
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
    """Bit layout of both stream payloads."""

    inputs: int
    x_width: int
    outputs: int
    out_width: int

    @property
    def in_width(self) -> int:
        """Width of i_stream.payload."""
        return self.inputs * self.x_width + 2

    @property
    def out_total_width(self) -> int:
        """Width of o_stream.payload."""
        return self.outputs * self.out_width + 1

    def pack_input(self, x: np.ndarray, first: bool, last: bool) -> int:
        """Return the i_stream payload of one beat as an unsigned integer."""
        mask = (1 << self.x_width) - 1
        v = 0
        for i, xi in enumerate(x):
            v |= (int(xi) & mask) << (i * self.x_width)
        v |= int(bool(first)) << (self.inputs * self.x_width)
        v |= int(bool(last)) << (self.inputs * self.x_width + 1)
        return v

    def unpack_output(self, v: int) -> tuple[list[int], int]:
        """Return (y values as signed integers, last bit) of one o_stream payload."""
        w = self.out_width
        mask, half = (1 << w) - 1, 1 << (w - 1)
        ys = []
        for j in range(self.outputs):
            u = (v >> (j * w)) & mask
            ys.append(u - (1 << w) if u & half else u)
        return ys, (v >> (self.outputs * w)) & 1

    @classmethod
    def from_ports(cls, ports: dict) -> "PortLayout":
        """Read the layout from spec.json's ``ports`` (field -> [lsb, width]), checking the contract.

        Accepts array fields given per element (``x[0]``, ``x[1]``, ...) or as one field with
        ``count`` / element ``width``. Raises ValueError when the layout is not the contract's.
        """
        def stream(name: str, arr: str) -> tuple[int, int, dict]:
            p = ports.get(name) or ports.get(f"{name}__payload") or {}
            fields = p.get("fields", p) if isinstance(p, dict) else {}
            elems = sorted((k for k in fields if k.startswith(f"{arr}[")),
                           key=lambda k: int(k[len(arr) + 1:-1]))
            if elems:
                lsbs = [fields[k][0] for k in elems]
                width = fields[elems[0]][1]
                if lsbs != [i * width for i in range(len(elems))]:
                    raise ValueError(f"{name}: {arr} elements are not packed from bit 0 up: {lsbs}")
                return len(elems), width, fields
            f = fields.get(arr)
            if isinstance(f, dict):
                return int(f["count"]), int(f["width"]), fields
            raise ValueError(f"{name}: no field {arr!r} in {sorted(fields)}")

        n_in, xw, fin = stream("i_stream", "x")
        n_out, ow, fout = stream("o_stream", "y")
        layout = cls(n_in, xw, n_out, ow)
        expect = {("i_stream", "first"): (n_in * xw, 1), ("i_stream", "last"): (n_in * xw + 1, 1),
                  ("o_stream", "last"): (n_out * ow, 1)}
        for (s, f), want in expect.items():
            got = (fin if s == "i_stream" else fout).get(f)
            if got is not None and tuple(got[:2]) != want:
                raise ValueError(f"{s}.{f} at {list(got)}, the contract says {list(want)}")
        return layout


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
    """Input beats in order and the output beats expected for them."""

    layout: PortLayout
    x: np.ndarray            # (B, I) int64
    first: np.ndarray        # (B,) bool
    last: np.ndarray         # (B,) bool
    beat_seq: np.ndarray     # (B,) sequence of each input beat
    exp_y: np.ndarray        # (E, O) int64
    exp_last: np.ndarray     # (E,) bool
    exp_seq: np.ndarray      # (E,) sequence of each expected output beat
    exp_step: np.ndarray     # (E,) step of each expected output beat
    sequences: int
    options: Options = field(default_factory=Options)

    def save(self, folder: str | Path) -> None:
        """Write job.json and job.npz into folder."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"layout": asdict(self.layout), "sequences": self.sequences,
                "options": asdict(self.options)}
        (d / JOB_JSON).write_text(json.dumps(meta, indent=1))
        np.savez(d / JOB_NPZ, x=self.x, first=self.first, last=self.last, beat_seq=self.beat_seq,
                 exp_y=self.exp_y, exp_last=self.exp_last, exp_seq=self.exp_seq,
                 exp_step=self.exp_step)

    @classmethod
    def load(cls, folder: str | Path) -> "Job":
        """Read a job written by :meth:`save`."""
        d = Path(folder)
        meta = json.loads((d / JOB_JSON).read_text())
        with np.load(d / JOB_NPZ) as a:
            arrays = {k: a[k] for k in a.files}
        return cls(layout=PortLayout(**meta["layout"]), sequences=meta["sequences"],
                   options=Options(**meta["options"]), **arrays)


def make_job(layout: PortLayout, xq: np.ndarray, lengths: np.ndarray, *, y: np.ndarray | None,
             h: np.ndarray | None = None, sequence: bool = False, keep_state: bool = False,
             options: Options | None = None) -> Job:
    """Build a job: one beat per step; expect ``y[n]`` per sequence, or ``h[n, t]`` per step.

    ``first`` is set on the first step of every sequence, or with ``keep_state`` only on the first
    step of the whole stream (the state carries over from one sequence to the next).
    """
    xq = np.asarray(xq, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    n = xq.shape[0]
    rows, first, last, beat_seq = [], [], [], []
    ey, elast, eseq, estep = [], [], [], []
    for s in range(n):
        ln = int(lengths[s])
        for t in range(ln):
            rows.append(xq[s, t])
            first.append(t == 0 and (not keep_state or s == 0))
            last.append(t == ln - 1)
            beat_seq.append(s)
            if sequence:
                ey.append(h[s, t])
                elast.append(t == ln - 1)
                eseq.append(s)
                estep.append(t)
        if not sequence:
            ey.append(y[s])
            elast.append(True)
            eseq.append(s)
            estep.append(ln - 1)
    return Job(layout=layout, x=np.array(rows, dtype=np.int64).reshape(-1, xq.shape[2]),
               first=np.array(first), last=np.array(last), beat_seq=np.array(beat_seq),
               exp_y=np.array(ey, dtype=np.int64).reshape(len(ey), -1), exp_last=np.array(elast),
               exp_seq=np.array(eseq), exp_step=np.array(estep), sequences=n,
               options=options or Options())
