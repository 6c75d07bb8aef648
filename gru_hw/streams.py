"""Interleaved streams: which sequence runs on which stream, the order of their beats, and the
golden model of a core that keeps a hidden state per stream.

A core built with S > 1 streams (:attr:`gru_hw.config.CoreConfig.streams`) takes beats of S
independent sequences interleaved step by step: every input beat names its stream, the core
keeps each stream's hidden state apart, and a stream's steps must arrive in order. Its outputs
therefore equal the golden model run on each stream's sequences alone, whatever the
interleaving: :func:`golden_streams` computes exactly that, and :func:`interleave` makes the
beat orders the simulations and benches send.
"""

from __future__ import annotations

import numpy as np

from .errors import GruHwError

__all__ = ["assign_streams", "interleave", "golden_streams", "ORDERS"]

#: How beats of the streams are interleaved: "round_robin" (one step of each stream in turn),
#: "random" (the next beat from a stream picked at random among those with beats left),
#: "blocks" (each sequence whole, in sequence order: no interleaving).
ORDERS = ("round_robin", "random", "blocks")


def assign_streams(n_seq: int, streams: int, stream_of=None) -> np.ndarray:
    """Return the stream of each of ``n_seq`` sequences: ``stream_of`` checked, or n % S."""
    if stream_of is None:
        return np.arange(n_seq, dtype=np.int64) % streams
    sid = np.asarray(stream_of, dtype=np.int64)
    if sid.shape != (n_seq,) or np.any(sid < 0) or np.any(sid >= streams):
        raise GruHwError(f"stream ids must be {n_seq} integers in 0..{streams - 1}",
                         subject="streams")
    return sid


def interleave(lengths, stream_of, *, order: str = "round_robin",
               seed: int = 0) -> list[tuple[int, int]]:
    """Return the beats of all sequences as ``(sequence, step)`` in sending order.

    Each stream's sequences keep their order (sequence n before n' on the same stream when
    n < n'), and each sequence's steps are in order; ``order`` (:data:`ORDERS`) decides how the
    streams' beats interleave (``seed``: the "random" order's generator).
    """
    if order not in ORDERS:
        raise GruHwError(f"interleaving must be one of {list(ORDERS)}, got {order!r}",
                         subject="order")
    lengths = [int(v) for v in lengths]
    sid = [int(v) for v in stream_of]
    if order == "blocks":
        return [(n, t) for n, t_len in enumerate(lengths) for t in range(t_len)]
    queues: dict[int, list[tuple[int, int]]] = {}
    for n, t_len in enumerate(lengths):
        queues.setdefault(sid[n], []).extend((n, t) for t in range(t_len))
    heads = {s: 0 for s in queues}
    rng = np.random.default_rng(seed)
    out: list[tuple[int, int]] = []
    live = sorted(queues)
    while live:
        if order == "round_robin":
            for s in list(live):
                out.append(queues[s][heads[s]])
                heads[s] += 1
        else:
            s = live[int(rng.integers(len(live)))]
            out.append(queues[s][heads[s]])
            heads[s] += 1
        live = [s for s in live if heads[s] < len(queues[s])]
    return out


def golden_streams(qm, xq: np.ndarray, lengths, stream_of, *, sequence: bool = False,
                   keep_state: bool = False):
    """The golden outputs of sequences run on their streams: ``(y, h)`` as
    :func:`gru_hw.golden.int_forward_q` returns them (h None without ``sequence``).

    Without ``keep_state`` every sequence starts from h = 0 (so the streams change nothing);
    with it, each stream's sequences continue that stream's own state, its first from zero.
    """
    from .golden import int_forward_q

    xq = np.asarray(xq, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    sid = np.asarray(stream_of, dtype=np.int64)
    n_seq = xq.shape[0]
    y = h = None
    for s in sorted(set(sid.tolist())):
        idx = np.flatnonzero(sid == s)
        res = int_forward_q(qm, xq[idx], lengths[idx], sequence=sequence, keep_state=keep_state)
        if y is None:
            y = np.zeros((n_seq,) + res.y.shape[1:], dtype=np.int64)
            h = np.zeros((n_seq,) + res.h.shape[1:], dtype=np.int64) if sequence else None
        y[idx] = res.y
        if sequence:
            h[idx] = res.h
    return y, h
