"""Run :class:`gru_hw.gateware.GRUCore` in Amaranth's simulator on integer inputs."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from amaranth.sim import Simulator

from .errors import GruHwError

__all__ = ["simulate"]


def _pattern(p):
    """Return an endless iterator of booleans (None: always True)."""
    if p is None:
        return itertools.repeat(True)
    if callable(p):
        return (bool(p(i)) for i in itertools.count())
    seq = list(p)
    if not seq:
        raise GruHwError("a valid/ready pattern must not be empty")
    return itertools.cycle(bool(v) for v in seq)


def simulate(qm, xq, lengths=None, *, lanes: int, sequence: bool = False, keep_state: bool = False,
             valid_pattern=None, ready_pattern=None, profile=None,
             max_cycles: int | None = None, vcd: str | Path | None = None,
             runtime_weights: bool = False, load=None, init_weights: bool = True,
             load_after: int = 0, weight_pattern=None, weight_memory: str = "bram",
             streams: int = 1, stream_of=None, order: str = "round_robin", order_seed: int = 0,
             accepts: list | None = None):
    """Simulate the core on quantized inputs ``xq`` (N, T, I) int64 in x_fmt.

    Returns ``(y, h, cycles)``: y (N, O) int64 in out_fmt (the head output, or the top layer's
    last h without a head), h (N, T, H) int64 in h_fmt with ``sequence`` (zeros past a sequence's
    length) else None, and cycles (N,) int64: clock cycles from the first input beat of sequence n
    accepted to its (last) output beat accepted. ``valid_pattern`` / ``ready_pattern`` are
    iterables of booleans (cycled) or callables cycle -> bool deciding, per cycle, whether the
    input is offered (when a beat is pending) and whether the output is accepted.

    ``runtime_weights`` builds the core with the weight port (memories initialised with ``qm``'s
    weights, or zeros with ``init_weights=False``). ``load`` (a QuantModel of the same shape and
    spec) is then written through the port: its beats are offered (``weight_pattern`` decides per
    cycle, like ``valid_pattern``) from the cycle after input beat ``load_after - 1`` was accepted
    (``load_after=0``: from the start, before any input is taken).

    ``weight_memory="spram"``: the weights sit in (an Amaranth model of) SPRAM, which starts
    empty; ``load`` defaults to ``qm`` and is written through the port as a board's loader would
    (a fixed build: the packed rows only).

    ``streams`` S > 1: the core keeps S hidden states; sequence n runs on stream
    ``stream_of[n]`` (default n % S) and the beats are sent interleaved in ``order``
    (:func:`gru_hw.streams.interleave`, ``order_seed`` for "random"); with ``keep_state`` each
    stream's sequences continue that stream's state. Every output beat must name the stream of
    the next output due (steps' outputs come in acceptance order), else this raises.
    ``accepts``, when given a list, receives the cycle each input beat was accepted (in sending
    order, :func:`gru_hw.streams.interleave`).
    """
    from .streams import assign_streams, interleave
    from .gateware import GRUCore

    xq = np.asarray(xq, dtype=np.int64)
    if xq.ndim == 2:
        xq = xq[None]
    n_seq, t_max, n_in = xq.shape
    if lengths is None:
        lengths = np.full(n_seq, t_max, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.shape != (n_seq,) or np.any(lengths < 1) or np.any(lengths > t_max):
        raise GruHwError(f"lengths must be {n_seq} integers in 1..{t_max}")
    dut = GRUCore(qm, lanes, sequence=sequence, profile=profile,
                  runtime_weights=runtime_weights, init_weights=init_weights,
                  weight_memory=weight_memory, spram_cells=False, streams=streams)
    sid = assign_streams(n_seq, streams, stream_of)
    if weight_memory == "spram" and load is None:
        load = qm
    wbeats = dut.memory_map.load_image(load) if load is not None else []
    if load is not None and not dut.config.weight_port:
        raise GruHwError("load= needs runtime_weights=True")
    if n_in != qm.input_size:
        raise GruHwError(f"x has {n_in} features per step, the model takes {qm.input_size}")
    has_head = dut.has_head
    hsz = qm.hidden_sizes[-1]
    out_size = qm.output_size

    beats = []
    first_of_stream = {}
    for n in range(n_seq):
        first_of_stream.setdefault(int(sid[n]), n)
    for n, t in interleave(lengths, sid, order=order if streams > 1 else "blocks",
                           seed=order_seed):
        first = int(t == 0 and (not keep_state or first_of_stream[int(sid[n])] == n))
        pl = {"x": [int(v) for v in xq[n, t]], "first": first,
              "last": int(t == lengths[n] - 1)}
        if streams > 1:
            pl["stream"] = int(sid[n])
        beats.append((pl, n))
    # the outputs due, in order: (sequence, its step) of every step that makes one
    step_of = {}
    due = []
    for pl, n in beats:
        t = step_of.get(n, 0)
        step_of[n] = t + 1
        if sequence or pl["last"]:
            due.append((n, t))
    expected_out = int(lengths.sum()) if sequence else n_seq
    if max_cycles is None:
        sch = dut.schedule
        max_cycles = 50 * (sch.cycles_per_step * int(lengths.sum()) + 200 * n_seq + 1000)

    y = np.zeros((n_seq, out_size), dtype=np.int64)
    h = np.zeros((n_seq, t_max, hsz), dtype=np.int64) if sequence else None
    cycles = np.zeros(n_seq, dtype=np.int64)
    first_accept = [None] * n_seq
    vpat, rpat, wpat = _pattern(valid_pattern), _pattern(ready_pattern), _pattern(weight_pattern)

    async def bench(ctx):
        i_s, o_s = dut.i_stream, dut.o_stream
        bi = 0          # next beat to send
        shown = -1      # beat currently on the payload
        got = 0
        cycle = 0
        wi = 0          # next weight beat
        w_held = False  # weight beat wi is offered and waits
        while got < expected_out or wi < len(wbeats):
            if cycle > max_cycles:
                raise RuntimeError(f"simulation did not finish in {max_cycles} cycles "
                                   f"(sent {bi} beats, received {got} outputs, "
                                   f"{wi} of {len(wbeats)} weight words)")
            # a weight beat, once offered, stays offered until taken (the stream rules)
            w_offer = wi < len(wbeats) and bi >= load_after and (w_held or next(wpat))
            if dut.config.weight_port:
                if w_offer:
                    ctx.set(dut.w_stream.payload, {"addr": wbeats[wi][0], "data": wbeats[wi][1],
                                                   "last": int(wi == len(wbeats) - 1)})
                ctx.set(dut.w_stream.valid, int(w_offer))
                w_held = w_offer
                if w_offer and ctx.get(dut.w_stream.ready):
                    wi += 1
                    w_held = False
            offer = bi < len(beats) and next(vpat)
            if offer and shown != bi:
                ctx.set(i_s.payload, beats[bi][0])
                shown = bi
            ctx.set(i_s.valid, int(offer))
            ready = next(rpat)
            ctx.set(o_s.ready, int(ready))
            if offer and ctx.get(i_s.ready):
                n = beats[bi][1]
                if first_accept[n] is None:
                    first_accept[n] = cycle
                if accepts is not None:
                    accepts.append(cycle)
                bi += 1
            if ready and ctx.get(o_s.valid):
                pl = ctx.get(o_s.payload)
                vals = [int(pl.y[i]) for i in range(len(pl.y))]
                last = int(pl.last)
                if got >= len(due):
                    raise GruHwError(f"an output beat more than the {len(due)} due")
                out_seq, out_step = due[got]
                if streams > 1 and int(pl.stream) != int(sid[out_seq]):
                    raise GruHwError(f"output beat {got} names stream {int(pl.stream)}, the "
                                     f"next due is sequence {out_seq}'s on stream "
                                     f"{int(sid[out_seq])}")
                if last != int(out_step == lengths[out_seq] - 1):
                    raise GruHwError(f"output beat {got} has last = {last}, not for step "
                                     f"{out_step} of sequence {out_seq}")
                if sequence:
                    h[out_seq, out_step] = vals
                    if last:
                        y[out_seq] = [int(pl.y_head[i]) for i in range(out_size)] if has_head else vals
                else:
                    y[out_seq] = vals
                got += 1
                if (not sequence) or last:
                    cycles[out_seq] = cycle - first_accept[out_seq]
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    if vcd is not None:
        with sim.write_vcd(str(vcd)):
            sim.run()
    else:
        sim.run()
    return y, h, cycles
