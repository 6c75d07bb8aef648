"""cocotb testbench for a generated ``gru_core``: driver, monitor, scoreboard, reset, cycle counts.

The job comes from the folder named by the environment variable ``GRU_TB_JOB`` (see
:mod:`gru_hw.sim.job`); results go back into the same folder. The bench:

- drives ``i_stream`` beat by beat, with idle cycles from a pause generator between beats;
- takes ``o_stream`` beats with ``ready`` from another pause generator (random backpressure),
  checking that ``valid`` and ``payload`` hold while a beat waits;
- compares EVERY output beat, as integers, with the expected one (from the golden model), and keeps
  the first mismatch as "sequence n, step t, index j: expected e, got g"; with several
  interleaved streams it keeps a scoreboard per stream: an output beat is compared with the next
  output due on the stream it names, which must also be the next output due overall (outputs
  come in the order their steps were accepted);
- optionally resets the core in the middle of the stream, then runs the whole job again from the
  start: after reset the core must behave as a fresh one;
- counts, per sequence, the cycles from its first input beat accepted to its last output beat
  accepted, and records the cycle every input beat and every output beat was taken.

It only wakes up when something can happen (value-change triggers instead of polling every clock
edge while the core computes), so long sequences simulate at close to the simulator's own speed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, Event, ReadOnly, RisingEdge, Timer, ValueChange, select

from .job import RESULTS_JSON, RESULTS_NPZ, Job, pause_generator

JOB_ENV = "GRU_TB_JOB"


class ProtocolError:
    """The first stream protocol violation seen (X on a handshake signal, valid dropped, ...)."""

    def __init__(self) -> None:
        self.message: str | None = None

    def note(self, message: str) -> None:
        if self.message is None:
            self.message = message


def _bit(handle, errors: ProtocolError, name: str) -> int:
    """Return a 1-bit signal's value as 0/1; X or Z count as 0 and are noted as an error."""
    v = str(handle.value)
    if v not in ("0", "1"):
        errors.note(f"{name} is {v} after reset (the core must drive it to 0 or 1)")
    return 1 if v == "1" else 0


class Progress:
    """Handshake counters shared by driver, monitor and watchdog."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0

    @property
    def total(self) -> int:
        return self.sent + self.received


class StreamDriver:
    """Drive ``i_stream``: beats in order, ``valid`` low for the cycles the pause generator asks.

    Once ``valid`` is high it stays high, with the payload unchanged, until the beat is taken.
    ``on_accept(k, ns)`` is called at the clock edge that takes beat ``k``.
    """

    def __init__(self, dut, pause, on_accept, errors: ProtocolError,
                 port: str = "i_stream") -> None:
        self.errors = errors
        self.clk = dut.clk
        self.port = port
        self.valid = getattr(dut, f"{port}__valid")
        self.ready = getattr(dut, f"{port}__ready")
        self.payload = getattr(dut, f"{port}__payload")
        self.pause = pause
        self.on_accept = on_accept

    async def send(self, payloads: list[int]) -> None:
        """Send every payload; return after the last one was taken (call right after an edge)."""
        for k, p in enumerate(payloads):
            while next(self.pause):
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.payload.value = p
            self.valid.value = 1
            while True:
                await ReadOnly()
                if _bit(self.ready, self.errors, f"{self.port}.ready"):
                    break
                await ValueChange(self.ready)  # sleep while the core computes
            await RisingEdge(self.clk)
            self.on_accept(k, get_sim_time("ns"))
        self.valid.value = 0


class StreamMonitor:
    """Take ``o_stream`` beats with ``ready`` from a pause generator; check the stream protocol.

    ``ready`` keeps its last value while the core has nothing to offer (the bench sleeps until
    ``valid`` changes) and follows the pause generator cycle by cycle while a beat is offered.
    ``on_beat(k, payload, ns)`` is called at the edge that takes beat ``k``.
    """

    def __init__(self, dut, pause, on_beat, errors: ProtocolError) -> None:
        self.errors = errors
        self.clk = dut.clk
        self.valid = dut.o_stream__valid
        self.ready = dut.o_stream__ready
        self.payload = dut.o_stream__payload
        self.pause = pause
        self.on_beat = on_beat

    async def receive(self, count: int) -> None:
        """Take ``count`` beats (call right after an edge)."""
        k = 0
        held = None  # payload of a beat that was offered but not taken
        while k < count:
            self.ready.value = 0 if next(self.pause) else 1
            await ReadOnly()
            if not _bit(self.valid, self.errors, "o_stream.valid"):
                if held is not None:
                    self.errors.note(f"o_stream: valid dropped before output beat {k} was taken")
                held = None
                await ValueChange(self.valid)
                continue
            payload = self.payload.value.to_unsigned()
            if held is not None and payload != held:
                self.errors.note(f"o_stream: payload of output beat {k} changed while it waited")
            if _bit(self.ready, self.errors, "o_stream.ready"):
                await RisingEdge(self.clk)
                self.on_beat(k, payload, get_sim_time("ns"))
                k += 1
                held = None
            else:
                held = payload
                await RisingEdge(self.clk)

    async def expect_quiet(self, cycles: int, clock_ns: int) -> str | None:
        """With ready high, check that no further beat comes for ``cycles`` cycles."""
        self.ready.value = 1
        await ReadOnly()
        if _bit(self.valid, self.errors, "o_stream.valid"):
            return "o_stream: an output beat more than expected"
        idx, _ = await select(ValueChange(self.valid), Timer(cycles * clock_ns, unit="ns"))
        await ReadOnly()
        if idx == 0 and _bit(self.valid, self.errors, "o_stream.valid"):
            return "o_stream: an output beat more than expected"
        return None


class Scoreboard:
    """Compare output beats with the expected ones, one queue per stream; keep the first mismatch.

    Output beat k names a stream (always 0 on a one-stream core): it is compared with the next
    output due on that stream, and that output must be the k-th due overall (the core returns
    outputs in the order their steps were accepted). ``got*`` are indexed like the expected
    outputs.
    """

    def __init__(self, job: Job, note: str = "") -> None:
        self.job = job
        self.note = note
        self.got = np.zeros_like(job.exp_y)
        self.got_head = np.zeros_like(job.exp_head)
        self.got_last = np.zeros(len(job.exp_y), dtype=bool)
        self.count = 0
        self.mismatches = 0
        self.first_mismatch: str | None = None
        self.queues: dict[int, list[int]] = {}
        for k, s in enumerate(job.exp_stream):
            self.queues.setdefault(int(s), []).append(k)
        self.heads = {s: 0 for s in self.queues}

    def _where(self, idx: int, stream: int | None = None) -> str:
        job = self.job
        w = f"sequence {int(job.exp_seq[idx])}, step {int(job.exp_step[idx])}"
        if job.streams > 1:
            w += f" (stream {int(job.exp_stream[idx]) if stream is None else stream})"
        return w

    def check(self, k: int, payload: int) -> int | None:
        """Check output beat k; return the index of the expected output it stands for (None
        when its stream has no output due)."""
        job = self.job
        ys, yh, last = job.layout.unpack_output(payload)
        sid = job.layout.unpack_stream(payload)
        self.count = k + 1
        queue, head = self.queues.get(sid, []), self.heads.get(sid, 0)
        if head >= len(queue):
            nxt = f"; the next output due is {self._where(k)}" if k < len(job.exp_y) else ""
            self._mismatch(f"output beat {k} names stream {sid}, which has no output due{nxt}")
            return None
        idx = queue[head]
        self.heads[sid] = head + 1
        self.got[idx] = ys
        self.got_head[idx] = yh
        self.got_last[idx] = bool(last)
        seq, step = int(job.exp_seq[idx]), int(job.exp_step[idx])
        on = f" on stream {sid}" if job.streams > 1 else ""
        msg = _first_difference(ys, job.exp_y[idx], f"sequence {seq}, step {step}, index", k, on)
        if msg is None and job.exp_head_valid[idx]:
            where = f"sequence {seq}, step {step}, y_head index"
            msg = _first_difference(yh, job.exp_head[idx], where, k, on)
        if msg is None and bool(last) != bool(job.exp_last[idx]):
            msg = (f"sequence {seq}, step {step}: last expected {int(job.exp_last[idx])}, "
                   f"got {last} (output beat {k}{on})")
        if msg is None and idx != k:
            msg = (f"output beat {k} is {self._where(idx)}'s, but outputs must come in the order "
                   f"their steps were accepted: the next due is {self._where(k)}")
        if msg:
            self._mismatch(msg)
        return idx

    def _mismatch(self, msg: str) -> None:
        self.mismatches += 1
        if self.first_mismatch is None:
            self.first_mismatch = msg + self.note


def _first_difference(got: list[int], exp: np.ndarray, where: str, k: int,
                      on: str = "") -> str | None:
    bad = [j for j in range(len(got)) if got[j] != int(exp[j])]
    if not bad:
        return None
    j = bad[0]
    return (f"{where} {j}: expected {int(exp[j])}, got {got[j]} "
            f"({len(bad)} of {len(got)} values differ in output beat {k}{on})")


@cocotb.test()
async def run_job(dut) -> None:
    """Run the job in $GRU_TB_JOB against the core and write the results beside it."""
    run = _Run(dut, Path(os.environ[JOB_ENV]))
    await run.start()
    try:
        await run.load_weights()
        if run.opt.reset_after_beats is not None:
            await run.reset_mid_stream()
        await run.whole_job()
    except _Stop as stop:
        run.result["error"] = str(stop)
        if run.errors.message and run.errors.message not in run.result["error"]:
            run.result["error"] += f"; first protocol error: {run.errors.message}"
    except Exception as exc:  # a bench bug: report it like a failure, with its traceback in the log
        dut._log.exception("the testbench failed")
        run.result["error"] = f"testbench error: {exc!r}"
    finally:
        run.write_results()
    assert run.result["match"], run.result["mismatch"]


class _Run:
    """One job against the core: its beats, scoreboard, timings and results."""

    def __init__(self, dut, folder: Path) -> None:
        self.dut = dut
        self.folder = folder
        self.job = job = Job.load(folder)
        self.opt = job.options
        self.wall0 = time.perf_counter()
        self.clk_ns = self.opt.clock_ns
        self.payloads = [job.layout.pack_input(job.x[b], job.first[b], job.last[b],
                                               job.beat_stream[b])
                         for b in range(len(job.x))]
        seq_first_beat: dict[int, int] = {}
        for b in range(len(job.x)):
            seq_first_beat.setdefault(int(job.beat_seq[b]), b)
        self.first_beat_seq = {b: s for s, b in seq_first_beat.items()}
        seq_last_out = {int(job.exp_seq[k]): k for k in range(len(job.exp_seq))}
        self.last_out_seq = {k: s for s, k in seq_last_out.items()}
        self.result: dict = {"match": False, "mismatch": None, "error": None}
        self.progress = Progress()
        self.errors = ProtocolError()
        self.t_in = np.full(job.sequences, np.nan)
        self.t_out = np.full(job.sequences, np.nan)
        self.accept_ns = np.full(len(job.x), np.nan)     # each input beat taken
        self.output_ns = np.full(len(job.exp_y), np.nan)  # each expected output taken
        self.board = Scoreboard(job)
        self.t_start = 0.0

    async def start(self) -> None:
        """Idle every port, reset the core, start the clock."""
        dut = self.dut
        dut.i_stream__valid.value = 0
        dut.i_stream__payload.value = 0
        dut.o_stream__ready.value = 0
        if self.job.layout.w_addr_width:
            dut.w_stream__valid.value = 0
            dut.w_stream__payload.value = 0
        dut.rst.value = 1
        Clock(dut.clk, self.clk_ns, unit="ns").start()
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        self.t_start = get_sim_time("ns")

    async def watchdog(self) -> str:
        """Return a message once no handshake happened for ``stall_cycles`` cycles."""
        progress = self.progress
        while True:
            before = progress.total
            await Timer(self.opt.stall_cycles * self.clk_ns, unit="ns")
            if progress.total == before:
                return (f"timeout: no handshake for {self.opt.stall_cycles} cycles after "
                        f"{progress.sent} of {len(self.payloads)} input beats and "
                        f"{progress.received} of {len(self.job.exp_y)} output beats")

    async def load_weights(self) -> None:
        """Send the job's weights, if any, as one packet through the weight port."""
        job = self.job
        n_w = int(job.w_addr.size)
        if not n_w:
            return
        w_payloads = [job.layout.pack_weight(job.w_addr[i], job.w_data[i], i == n_w - 1)
                      for i in range(n_w)]
        w_sent = [0]

        def w_accept(k: int, ns: float) -> None:
            w_sent[0] += 1
            self.progress.sent += 1

        wdrv = StreamDriver(self.dut, pause_generator(self.opt.idle), w_accept, self.errors,
                            "w_stream")
        idx, msg = await select(wdrv.send(w_payloads), self.watchdog())
        if idx == 1:
            raise _Stop(f"{msg} (loading weights: {w_sent[0]} of {n_w} words taken)")
        if self.errors.message:
            raise _Stop(f"{self.errors.message} (loading weights)")
        self.result["weights_loaded"] = w_sent[0]
        self.progress.sent = 0
        self.t_start = get_sim_time("ns")

    async def reset_mid_stream(self) -> None:
        """Send part of the stream, then reset the core in the middle of it."""
        dut, opt, progress = self.dut, self.opt, self.progress
        pre = Scoreboard(self.job, note=" (before the mid-stream reset)")
        reached = Event()

        def pre_accept(k: int, ns: float) -> None:
            progress.sent += 1
            if k + 1 >= opt.reset_after_beats:
                reached.set()

        def pre_beat(k: int, payload: int, ns: float) -> None:
            progress.received += 1
            pre.check(k, payload)

        drv = StreamDriver(dut, pause_generator(opt.idle), pre_accept, self.errors)
        mon = StreamMonitor(dut, pause_generator(opt.backpressure), pre_beat, self.errors)
        tasks = [cocotb.start_soon(drv.send(self.payloads)),
                 cocotb.start_soon(mon.receive(len(self.job.exp_y)))]
        idx, msg = await select(reached.wait(), self.watchdog())
        if idx == 1:
            raise _Stop(f"{msg} (before the mid-stream reset)")
        await ClockCycles(dut.clk, opt.reset_delay)
        for t in tasks:
            t.cancel()
        dut.i_stream__valid.value = 0
        dut.o_stream__ready.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, opt.reset_cycles)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        self.result["reset"] = {"after_beats": progress.sent, "outputs_before": pre.count}
        if pre.first_mismatch:
            self.board.first_mismatch = pre.first_mismatch
            self.board.mismatches += pre.mismatches
        if self.errors.message:
            raise _Stop(f"{self.errors.message} (before the mid-stream reset)")
        progress.sent = progress.received = 0
        self.t_start = get_sim_time("ns")

    async def whole_job(self) -> None:
        """The whole job from a fresh (reset) core, timing each sequence."""
        opt, progress = self.opt, self.progress

        def accept(k: int, ns: float) -> None:
            progress.sent += 1
            self.accept_ns[k] = ns
            s = self.first_beat_seq.get(k)
            if s is not None:
                self.t_in[s] = ns

        def beat(k: int, payload: int, ns: float) -> None:
            progress.received += 1
            idx = self.board.check(k, payload)
            if idx is None:
                return
            self.output_ns[idx] = ns
            s = self.last_out_seq.get(idx)
            if s is not None:
                self.t_out[s] = ns

        drv = StreamDriver(self.dut, pause_generator(opt.idle), accept, self.errors)
        mon = StreamMonitor(self.dut, pause_generator(opt.backpressure), beat, self.errors)
        cocotb.start_soon(drv.send(self.payloads))
        idx, msg = await select(mon.receive(len(self.job.exp_y)), self.watchdog())
        if idx == 1:
            raise _Stop(msg)
        if self.errors.message:
            raise _Stop(self.errors.message)
        extra = await mon.expect_quiet(max(16, opt.stall_cycles // 100), self.clk_ns)
        if extra:
            raise _Stop(extra)

    def write_results(self) -> None:
        """Decide match/mismatch and write results.json + results.npz beside the job."""
        result, board, job = self.result, self.board, self.job
        sim_ns = get_sim_time("ns") - self.t_start
        cycles = np.rint((self.t_out - self.t_in) / self.clk_ns)
        t0 = self.accept_ns[0] if len(self.accept_ns) else np.nan
        accepts = np.rint((self.accept_ns - t0) / self.clk_ns)
        outputs = np.rint((self.output_ns - t0) / self.clk_ns)
        result["mismatch"] = board.first_mismatch or result["error"]
        if result["mismatch"] is None and board.count != len(job.exp_y):
            result["mismatch"] = f"only {board.count} of {len(job.exp_y)} output beats arrived"
        result["match"] = result["mismatch"] is None
        result.update(mismatches=board.mismatches, beats_sent=self.progress.sent,
                      beats_received=board.count, beats_expected=int(len(job.exp_y)),
                      sim_cycles=int(round(sim_ns / self.clk_ns)),
                      wall_seconds=time.perf_counter() - self.wall0)
        np.savez(self.folder / RESULTS_NPZ, y=board.got, y_head=board.got_head,
                 last=board.got_last, cycles=np.nan_to_num(cycles, nan=-1).astype(np.int64),
                 accept_cycles=np.nan_to_num(accepts, nan=-1).astype(np.int64),
                 output_cycles=np.nan_to_num(outputs, nan=-1).astype(np.int64))
        (self.folder / RESULTS_JSON).write_text(json.dumps(result, indent=1))


class _Stop(Exception):
    """The run cannot go on (hung core, protocol violation)."""
