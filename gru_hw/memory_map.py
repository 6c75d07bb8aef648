"""The core's memories: what each holds, how wide it is, and the weight port's address map.

One definition used by the gateware (memory contents and widths, the accumulator width), by
``generate`` (spec.json: widths, memory bits, the weight image), by run-time weight loading and by
the host (which never elaborates gateware to learn the map).

Layout (see :class:`gru_hw.schedule.Schedule` for the program):

* **Weight memories**, one per MAC lane, ``weight_depth`` words: lane p holds, for every phase,
  group g and column c, the weight of row ``g*P + p`` at address ``waddr + g*cols + c``
  (zero where a partial last group has no such row).
* **Bias memory** (shared), ``bias_rows`` words: row r of phase ph at ``brow + r`` (with the
  profile's tail width K > 1 read at K addresses per cycle: a copy per read port).
* **Park buffer** (shared), ``buffer_rows`` accumulator words (tail width K > 1: K banks of
  ``buffer_rows`` words, one word per beat); **state banks** (two per layer), **gate memories**
  (z, and r or r*h; none for reset_after with K > 1), all written by the core itself.

With ``weight_memory="spram"`` the P lanes' weights are one **packed row** per address instead
(lane p's word in bits ``[p*ww, (p+1)*ww)``, ``ww`` = ``weight_width``), held in SB_SPRAM256KA
blocks of 16K x 16 bits: ``spram_shape`` = (blocks side by side, banks in depth). Block k side by
side holds the row's **slice** k, bits ``[16k, 16k + 16)``, and is written a slice at a time.

Weight port: region ``s`` starts at ``s << offset_bits``; a word is ``data_width`` bits, sent in
``word_bytes`` bytes. Block RAM: region s is lane s's weight memory for s < P, the bias memory
for s = P. SPRAM: region k < ``slices`` holds slice k of every row, region ``slices`` the bias
memory (written only with run-time weights; a fixed SPRAM build loads the slices alone, its biases
are in the bitstream, and its words are 16 bits).

Accumulator sizing: a fixed-weight core sizes its accumulators (and bias memory) for *its own*
weights over every input the formats can hold; a run-time-weights core for *any* weights the
formats can hold. In both cases no accumulator can overflow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import GruHwError
from .fixed import bits_for_int_range

__all__ = ["MemoryMap", "Region", "byte_width", "SPRAM_DEPTH", "SPRAM_WIDTH"]


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) & 1 else v

#: One SB_SPRAM256KA: 16,384 words of 16 bits.
SPRAM_DEPTH = 16384
SPRAM_WIDTH = 16


def byte_width(bits: int) -> int:
    """Return the bytes that carry a signed value of ``bits`` bits (1, 2, 4 or 8)."""
    for n in (1, 2, 4, 8):
        if bits <= 8 * n:
            return n
    raise GruHwError(f"a {bits}-bit value is wider than 64 bits")


@dataclass(frozen=True)
class Region:
    """One region of the weight port: a memory, its base address and its words."""

    name: str
    base: int
    width: int
    words: tuple[int, ...]


class MemoryMap:
    """The memories of a core for one quantized model, schedule and weight-port choice."""

    def __init__(self, qm, schedule, *, runtime_weights: bool = False,
                 weight_memory: str = "bram") -> None:
        self.qm = qm
        self.weight_memory = weight_memory
        self.spec = qm.spec
        self.schedule = schedule
        self.lanes = schedule.lanes
        self.runtime_weights = bool(runtime_weights)
        wdata, brows, (lo, hi), wmax = self._tables(qm)
        self._wdata, self._brows = wdata, brows
        spec = self.spec
        if self.runtime_weights:
            (lo, hi), wmax, bbits = self.format_bounds()
        else:
            bbits = max(bits_for_int_range(min(brows), max(brows)), 2)
        #: width of a weight word (at least the widest weight format of the input matrices)
        self.weight_width = max(wmax, max(lf.w_ih_fmt.width for lf in spec.layers))
        #: width of a vector element (input or hidden state)
        self.vector_width = max(spec.x_fmt.width, spec.h_fmt.width)
        prod = self.weight_width + self.vector_width
        #: accumulator width: every reachable sum (bias included) plus one bit
        self.acc_width = max(bits_for_int_range(lo, hi), prod) + 1
        self.bias_width = bbits
        self.weight_depth = len(wdata[0])
        self.offset_bits = max(1, (max(self.weight_depth, len(brows)) - 1).bit_length())
        #: width of a weight-memory word: one lane's weight, or a packed row of all P (SPRAM)
        self.row_width = self.weight_width * (self.lanes if self.packed else 1)
        self.addr_width = self.offset_bits + max(1, (self.bias_region).bit_length())
        if self.packed:  # 16-bit slices; biases only with run-time weights
            self.data_width = max(SPRAM_WIDTH, self.bias_width if self.runtime_weights else 0)
        else:
            self.data_width = max(self.row_width, self.bias_width)

    # ---- geometry ----------------------------------------------------------------------------
    @property
    def packed(self) -> bool:
        """Whether the lanes' weights are packed rows (SPRAM) rather than one memory per lane."""
        return self.weight_memory == "spram"

    @property
    def slices(self) -> int:
        """16-bit slices of a packed row (0 in block RAM): the SPRAM blocks side by side."""
        return -(-self.row_width // SPRAM_WIDTH) if self.packed else 0

    @property
    def bias_region(self) -> int:
        """The weight-port region of the bias memory (P, or the slices with packed rows)."""
        return self.slices if self.packed else self.lanes

    @property
    def spram_shape(self) -> tuple[int, int]:
        """(blocks side by side, banks in depth) of SB_SPRAM256KA that hold the packed rows."""
        wide = -(-self.row_width // SPRAM_WIDTH)
        return wide, max(1, -(-self.weight_depth // SPRAM_DEPTH))

    @property
    def spram_blocks(self) -> int:
        """SB_SPRAM256KA blocks the weights take (0 in block RAM)."""
        if not self.packed:
            return 0
        wide, banks = self.spram_shape
        return wide * banks

    # ---- contents --------------------------------------------------------------------------
    @property
    def lane_words(self) -> list[list[int]]:
        """The initial words of each lane's weight memory (the map's own model)."""
        return self._wdata

    @property
    def bias_words(self) -> list[int]:
        """The initial words of the bias memory (the map's own model)."""
        return self._brows

    def _phase_matrix(self, ph, qm):
        """Return (weights (rows, cols), bias (rows,), vector (lo, hi)) of a phase, rows in order."""
        spec = self.spec
        if ph.rowset == "head":
            h = spec.h_fmt
            return qm.head_w, qm.head_b, (h.min_int, h.max_int)
        q = qm.layers[ph.layer]
        hk = qm.hidden_sizes[ph.layer]
        kinds = {"all": 3, "rz": 2}.get(ph.rowset)
        if kinds is not None:
            order = [kind * hk + j for j in range(hk) for kind in range(kinds)]
        else:
            order = [2 * hk + j for j in range(hk)]
        if ph.x_like:
            w, b = q.w_ih[order], q.b_ih[order]
            f = spec.in_fmt(ph.layer)
        else:
            w, b = q.w_hh[order], q.b_hh[order]
            f = spec.h_fmt
        return w, b, (f.min_int, f.max_int)

    def _tables(self, qm):
        """Return (per-lane weight words, bias rows, accumulator (lo, hi), weight bits) of ``qm``."""
        sch = self.schedule
        p = self.lanes
        wdata = [[0] * max(sch.weight_depth, 1) for _ in range(p)]
        brows = [0] * sch.bias_rows
        lo_all = hi_all = 0
        wmax = 1
        for ph in sch.phases:
            w, b, (vlo, vhi) = self._phase_matrix(ph, qm)
            w = np.asarray(w, dtype=np.int64)
            b = np.asarray(b, dtype=np.int64)
            pos = np.where(w > 0, w * vhi, w * vlo).sum(axis=1) + b
            neg = np.where(w > 0, w * vlo, w * vhi).sum(axis=1) + b
            lo_all = min(lo_all, int(neg.min()), int(b.min()))
            hi_all = max(hi_all, int(pos.max()), int(b.max()))
            wmax = max(wmax, bits_for_int_range(int(w.min()), int(w.max())))
            brows[ph.brow:ph.brow + ph.rows] = [int(v) for v in b]
            for g in range(ph.groups):
                base = ph.waddr + g * ph.cols
                for lane in range(min(p, ph.rows - g * p)):
                    wdata[lane][base:base + ph.cols] = [int(v) for v in w[g * p + lane]]
        return wdata, brows, (lo_all, hi_all), wmax

    def format_bounds(self):
        """Return (accumulator (lo, hi), weight bits, bias bits) over every model of the formats."""
        spec = self.spec
        bound = 0
        wbits, bbits = 1, 2
        for ph in self.schedule.phases:
            if ph.rowset == "head":
                wf, bf, vf = spec.head.w_fmt, spec.head_b_fmt(), spec.h_fmt
            else:
                lf = spec.layers[ph.layer]
                if ph.x_like:
                    wf, bf, vf = lf.w_ih_fmt, spec.b_ih_fmt(ph.layer), spec.in_fmt(ph.layer)
                else:
                    wf, bf, vf = lf.w_hh_fmt, spec.b_hh_fmt(ph.layer), spec.h_fmt
            # the largest |w * v| is min_int * min_int; the largest |b| is -min_int
            bound = max(bound, ph.cols * wf.min_int * vf.min_int - bf.min_int)
            wbits, bbits = max(wbits, wf.width), max(bbits, bf.width)
        return (-bound, bound), wbits, bbits

    # ---- sizes -----------------------------------------------------------------------------
    @property
    def memory_bits(self) -> dict[str, int]:
        """Bits of every memory of the core, by name (``total`` included)."""
        sch, spec = self.schedule, self.spec
        gate_bits = spec.gate_fmt.width
        k = sch.tail_width
        ways = max(1, sch.profile.tail_units)
        hs = ways * sum(-(-h // ways) for h in self.qm.hidden_sizes)  # words of every way
        bits = {
            "weights": self.lanes * self.weight_depth * self.weight_width,
            # tail width K: K reads per cycle (a copy per read port)
            "bias": k * max(sch.bias_rows, 2) * self.bias_width,
            "park": sch.park_banks * max(sch.buffer_rows, 2) * self.acc_width,
            "state": 2 * hs * spec.h_fmt.width,
        }
        if not self.qm.reset_after:
            bits.update(z=hs * gate_bits, rh=hs * spec.h_fmt.width)
        elif k == 1:  # with K > 1 the tail passes r and z of a unit to its n row itself
            bits.update(z=hs * gate_bits, r=hs * gate_bits)
        bits["total"] = sum(bits.values())
        return bits

    @property
    def word_bytes(self) -> int:
        """Bytes per weight-port word on the board link and in weight images."""
        return byte_width(self.data_width)

    # ---- the weight port -------------------------------------------------------------------
    def check_compatible(self, qm) -> None:
        """Raise GruHwError unless ``qm`` has this map's shape, variant and QuantSpec."""
        from .schedule import Shapes

        a, b = Shapes.of(qm), Shapes.of(self.qm)
        if a != b:
            raise GruHwError(
                f"the model ({a.describe()}) does not have the core's shape ({b.describe()})")
        if qm.spec.to_json() != self.spec.to_json():
            raise GruHwError("the model is quantized with other formats than the core's: "
                             "quantize it with the core's QuantSpec (its qconfig.json)")

    def regions(self, qm=None) -> list[Region]:
        """Return the weight-port regions filled with ``qm``'s words (default: the map's model).

        In order: lane 0's weight memory, ..., lane P-1's (or the packed rows), then the bias
        memory. Word ``i`` of a region goes to address ``base + i``. ``qm`` must have the map's
        shape and QuantSpec.
        """
        if qm is None or qm is self.qm:
            wdata, brows = self._wdata, self._brows
        else:
            self.check_compatible(qm)
            wdata, brows, _, _ = self._tables(qm)
        step = 1 << self.offset_bits
        if self.packed:
            rows = self.pack_rows(wdata)
            out = [Region(f"weights{k}", k * step, SPRAM_WIDTH,
                          tuple(_signed((r >> (SPRAM_WIDTH * k)) & 0xFFFF, SPRAM_WIDTH)
                                for r in rows))
                   for k in range(self.slices)]
        else:
            out = [Region(f"lane{p}", p * step, self.weight_width, tuple(words))
                   for p, words in enumerate(wdata)]
        out.append(Region("bias", self.bias_region * step, self.bias_width, tuple(brows)))
        return out

    def pack_rows(self, lane_words) -> list[int]:
        """Return the packed rows of per-lane words, as unsigned ``row_width``-bit values."""
        ww = self.weight_width
        mask = (1 << ww) - 1
        rows = []
        for words in zip(*lane_words):
            v = 0
            for p, w in enumerate(words):
                v |= (int(w) & mask) << (p * ww)
            rows.append(v)
        return rows

    def boot_regions(self, qm=None) -> list[Region]:
        """Return the regions a board must load before it runs (those the bitstream cannot
        initialise): the packed rows' slices of an SPRAM build; none in block RAM."""
        return self.regions(qm)[:self.slices] if self.packed else []

    def boot_image(self, qm=None) -> list[int]:
        """Return the words a board loads from its flash at power-up, region after region
        (:meth:`boot_regions`: ``weight_depth`` words each, region k from ``k << offset_bits``)."""
        return [w for r in self.boot_regions(qm) for w in r.words]

    def load_image(self, qm=None) -> list[tuple[int, int]]:
        """Return the ``(address, word)`` a core must be loaded with before it runs ``qm``.

        Run-time weights: the whole image (every region); a fixed SPRAM build: its packed rows
        (:meth:`boot_regions`); a fixed block-RAM build: nothing (the bitstream holds it).
        """
        regions = self.regions(qm) if self.runtime_weights else self.boot_regions(qm)
        return [(r.base + i, w) for r in regions for i, w in enumerate(r.words)]

    def image(self, qm=None) -> list[tuple[int, int]]:
        """Return every ``(address, word)`` of ``qm`` for the weight port, in region order."""
        return [(r.base + i, w) for r in self.regions(qm) for i, w in enumerate(r.words)]

    def to_json(self) -> dict:
        """Return the address map (not the words) as a JSON-ready dict."""
        return {
            "weight_memory": self.weight_memory,
            "addr_width": self.addr_width, "data_width": self.data_width,
            "offset_bits": self.offset_bits, "word_bytes": self.word_bytes,
            "regions": [{"name": r.name, "base": r.base, "words": len(r.words), "width": r.width}
                        for r in self.regions()],
        }
