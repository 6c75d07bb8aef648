"""Run the generated hardware on inputs and compare every output with the bit-exact golden model.

``run_simulation`` is what ``gru-hw simulate`` calls. The RTL simulators (Verilator, Icarus) run
the generated Verilog under the cocotb bench (:mod:`gru_hw.sim`, source in the top-level
``sim/`` folder); ``amaranth`` runs
the same core in Amaranth's own simulator (no Verilog). Every output beat is compared, as
integers, with :func:`gru_hw.golden.int_forward_q`.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .config import CoreConfig, get_profile
from .errors import GruHwError
from .sim.runner import SIMULATORS as RTL_SIMULATORS

#: Every simulator ``simulate`` can run: the cocotb bench's RTL simulators, then Amaranth's own.
SIMULATORS = RTL_SIMULATORS + ("amaranth",)


# The sources a generated core depends on (a change in any of them means a new core).
_GENERATOR_SOURCES = ("gateware/*.py", "generate.py", "schedule.py", "activations.py", "fixed.py",
                      "quant.py", "model.py", "config.py", "memory_map.py")


def _source_hash() -> str:
    """Return a hash of the generator's sources."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent
    for pattern in _GENERATOR_SOURCES:
        for p in sorted(pkg.glob(pattern)):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _qm_hash(qm) -> str:
    from .protocol import model_hash

    return model_hash(qm).hex()


def generate_cached(qm, root: str | Path, *, lanes: int, sequence: bool = False,
                    streams: int = 1, **kwargs) -> tuple[Path, dict]:
    """Generate the core into ``root/rtl-<hash>`` unless already there; return (verilog, spec).

    The folder name hashes the quantized model, the options and gru_hw's sources, so a changed
    generator never reuses an old core. ``streams`` S > 1: a core serving S interleaved streams
    (:func:`gru_hw.generate.generate`).
    """
    import json

    from .generate import generate

    if streams != 1:
        kwargs["streams"] = streams

    key = hashlib.sha256(f"{_qm_hash(qm)} {lanes} {sequence} {sorted(kwargs.items())} "
                         f"{_source_hash()}".encode()).hexdigest()[:16]
    out = Path(root) / f"rtl-{key}"
    done = out / "spec.json"
    if not done.exists():
        Path(root).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"rtl-{key}.", dir=root))
        try:
            generate(qm, tmp, lanes=lanes, sequence=sequence, **kwargs)
            try:
                tmp.replace(out)
            except OSError:  # another session generated it meanwhile: use theirs
                if not done.exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    info = json.loads(done.read_text())
    return out / info.get("verilog", "gru_core.v"), info


def first_mismatch(exp_y: np.ndarray, got_y: np.ndarray, lengths: np.ndarray, *,
                   exp_h: np.ndarray | None = None, got_h: np.ndarray | None = None) -> str | None:
    """Return "sequence n, step t, index j: expected e, got g" for the first difference, or None.

    With ``exp_h``/``got_h`` (N, T, H), every step is compared before the sequence's y.
    """
    for n in range(exp_y.shape[0]):
        if exp_h is not None and got_h is not None:
            for t in range(int(lengths[n])):
                bad = np.flatnonzero(exp_h[n, t] != got_h[n, t])
                if bad.size:
                    j = int(bad[0])
                    return (f"sequence {n}, step {t}, index {j}: expected {int(exp_h[n, t, j])}, "
                            f"got {int(got_h[n, t, j])}")
        bad = np.flatnonzero(exp_y[n] != got_y[n])
        if bad.size:
            j = int(bad[0])
            return (f"sequence {n}, step {int(lengths[n]) - 1}, index {j}: expected "
                    f"{int(exp_y[n, j])}, got {int(got_y[n, j])}")
    return None


def stall_cycles(info: dict) -> int:
    """Return how long the bench waits without any handshake before calling the core hung."""
    sch = info.get("schedule", {})
    one = max([int(sch.get("cycles_per_step", 0)), int(sch.get("first_step_cycles", 0)),
               int(sch.get("latency", 0))]
              + [int(v) for v in sch.get("cycles_per_sequence_values", {"1": 0}).values()][:1])
    # with S streams a handshake may wait for a step of every other stream
    return (20 * one + 2000) * max(1, int(info.get("streams", 1) or 1))


def rtl_run(qm, xq: np.ndarray, lengths: np.ndarray, *, simulator: str, lanes: int,
            sequence: bool = False, keep_state: bool = False, build_root: str | Path,
            test_dir: str | Path, waves: bool = False, options: dict | None = None,
            golden=None, runtime_weights: bool = False, core_qm=None, profile=None,
            weight_memory: str = "bram", streams: int = 1, stream_of=None,
            order: str = "round_robin", order_seed: int = 0) -> dict:
    """Run integer inputs through the generated core in an RTL simulator; compare with golden.

    With ``runtime_weights`` the core has the weight port and is generated from ``core_qm``
    (default ``qm``; same shape and QuantSpec) with its weight memories left zero; the bench
    loads ``qm``'s weights through the port before the first input, and golden is ``qm``'s.

    Returns the bench's result dict (``match``, ``mismatch``, ``cycles`` (N,), ``waves``, ...)
    plus ``y`` (N, O) and, with ``sequence``, ``h`` (N, T, H): the hardware's integer outputs.
    ``options`` are :class:`gru_hw.sim.job.Options` fields (idle, backpressure, reset_after_beats, ...).
    ``weight_memory="spram"``: the weights in SB_SPRAM256KA cells (Yosys's iCE40 cell models),
    loaded through the port before the first input, as a board's flash loader does.

    ``streams`` S > 1: a core with S hidden states; sequence n runs on stream ``stream_of[n]``
    (default n % S), the beats are sent interleaved in ``order`` (round_robin, random with
    ``order_seed``, blocks: :func:`gru_hw.streams.interleave`) and the bench checks every output
    beat against the next output due on its stream (golden: :func:`gru_hw.streams.golden_streams`,
    each stream's sequences continuing that stream's state with ``keep_state``). The result is
    the same as with one stream, plus ``accept_cycles`` / ``output_cycles`` (see
    :func:`gru_hw.sim.runner.run_built`) and ``beats`` ((sequence, step) in sending order).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if golden is None:
        golden = _golden(qm, xq, lengths, sequence=sequence, keep_state=keep_state,
                         streams=streams, stream_of=stream_of)
    weights = library = None
    profile = get_profile(profile)
    extra = {"weight_memory": weight_memory} if weight_memory != "bram" else {}
    if streams != 1:
        extra["streams"] = streams
    if weight_memory == "spram":
        from .netlist import primitive_library

        library = primitive_library("ice40")
    if runtime_weights:
        core_qm = qm if core_qm is None else core_qm
        config = CoreConfig(core_qm, lanes, profile, sequence=sequence, runtime_weights=True,
                            weight_memory=weight_memory, streams=streams)
        weights = config.memory_map.image(qm)
        verilog, info = generate_cached(core_qm, build_root, lanes=lanes, sequence=sequence,
                                        runtime_weights=True, init_weights=False, profile=profile,
                                        **extra)
    else:
        verilog, info = generate_cached(qm, build_root, lanes=lanes, sequence=sequence,
                                        profile=profile, **extra)
        if weight_memory == "spram":
            config = CoreConfig(qm, lanes, profile, sequence=sequence, weight_memory="spram",
                                streams=streams)
            weights = config.memory_map.load_image(qm)
    return _run_on_core(qm, xq, lengths, verilog, info, golden, simulator=simulator,
                        sequence=sequence, keep_state=keep_state, build_root=build_root,
                        test_dir=test_dir, waves=waves, options=options, weights=weights,
                        library=library, streams=streams, stream_of=stream_of, order=order,
                        order_seed=order_seed)


def _golden(qm, xq, lengths, *, sequence, keep_state, streams=1, stream_of=None):
    """The golden outputs (``.y``, ``.h``) of sequences run on their streams (one stream: as
    :func:`gru_hw.golden.int_forward_q`)."""
    from types import SimpleNamespace

    from .streams import assign_streams, golden_streams

    xq = np.asarray(xq, dtype=np.int64)
    sid = assign_streams(xq.shape[0], streams, stream_of)
    y, h = golden_streams(qm, xq, lengths, sid, sequence=sequence, keep_state=keep_state)
    return SimpleNamespace(y=y, h=h)


def _run_on_core(qm, xq, lengths, verilog, info, golden, *, simulator, sequence, keep_state,
                 build_root, test_dir, waves, options, weights=None, library=None,
                 streams: int = 1, stream_of=None, order: str = "round_robin",
                 order_seed: int = 0) -> dict:
    """Run a job on a core's Verilog (RTL or netlist) under the cocotb bench; collect y and h."""
    from .sim.job import Options, PortLayout, make_job
    from .sim.runner import ToolMissing, run_job

    layout = PortLayout.from_ports(info["ports"])
    opts = Options(**{"stall_cycles": stall_cycles(info), **(options or {})})
    job = make_job(layout, xq, lengths, y=golden.y, h=golden.h, sequence=sequence,
                   keep_state=keep_state, options=opts, weights=weights, streams=streams,
                   stream_of=stream_of, order=order, order_seed=order_seed)
    try:
        res = run_job(verilog, job, simulator=simulator, build_root=build_root,
                      test_dir=test_dir, waves=waves, library=library)
    except ToolMissing as exc:
        raise GruHwError(str(exc)) from None
    n, t = xq.shape[0], xq.shape[1]
    beats = res["y"]
    if sequence:
        h = np.zeros((n, t, qm.hidden_sizes[-1]), dtype=np.int64)
        h[job.exp_seq, job.exp_step] = beats
        last_beat = {int(s): k for k, s in enumerate(job.exp_seq)}
        if layout.head_outputs:
            y = np.stack([res["y_head"][last_beat[s]] for s in range(n)])
        else:
            y = np.stack([h[s, lengths[s] - 1] for s in range(n)])
        res["h"] = h
    else:  # one beat per sequence, in the order the sequences ended
        y = np.zeros((n,) + beats.shape[1:], dtype=np.int64)
        y[job.exp_seq] = beats
    res["y"] = y
    res["beats"] = [(int(s), int(t)) for s, t in zip(job.beat_seq, _steps(job.beat_seq))]
    res["spec_json"] = info
    return res


def _steps(beat_seq) -> list[int]:
    """The step of each beat, given each beat's sequence in sending order."""
    seen: dict[int, int] = {}
    out = []
    for s in beat_seq:
        t = seen.get(int(s), 0)
        seen[int(s)] = t + 1
        out.append(t)
    return out


def netlist_run(qm, xq: np.ndarray, lengths: np.ndarray, *, config, family: str,
                synth_opts: str | None, build_root: str | Path, test_dir: str | Path,
                simulator: str = "icarus", waves: bool = False, options: dict | None = None,
                golden=None, keep_state: bool = False, mutate: str | None = None,
                progress=None, stream_of=None, order: str = "round_robin",
                order_seed: int = 0) -> dict:
    """Run integer inputs through the *synthesized* core (gate-level netlist); compare with golden.

    The core of ``config`` is synthesized with ``family``'s synthesis command and ``synth_opts``
    (what a board build of that family uses) and simulated with Yosys's primitive models
    (:mod:`gru_hw.netlist`). ``mutate`` ("dsp-signed" or "lut") alters the netlist on purpose
    (to show the check catches it). The result adds ``netlist`` (what was synthesized: command,
    primitive counts, model library version) to :func:`rtl_run`'s. A core of several streams
    (``config.streams``) is run like :func:`rtl_run` runs one (``stream_of``, ``order``,
    ``order_seed``).
    """
    from .netlist import mutate_netlist, primitive_library, synthesize_core

    library = primitive_library(family)
    if simulator not in library.simulators:
        raise GruHwError(f"the {family} primitive models run in {' or '.join(library.simulators)}"
                         f", not {simulator}", subject="simulator")
    lengths = np.asarray(lengths, dtype=np.int64)
    sequence = config.sequence
    streams = getattr(config, "streams", 1)
    if golden is None:
        golden = _golden(qm, xq, lengths, sequence=sequence, keep_state=keep_state,
                         streams=streams, stream_of=stream_of)
    extra = ({"weight_memory": config.weight_memory} if config.weight_memory != "bram" else {})
    _, info = generate_cached(qm, build_root, lanes=config.lanes, sequence=sequence,
                              profile=config.profile, runtime_weights=config.runtime_weights,
                              streams=streams, **extra)
    weights = config.memory_map.load_image(qm) if config.weight_memory == "spram" else None
    key = hashlib.sha256(f"{_qm_hash(qm)} {config.to_json()} {family} {synth_opts} "
                         f"{_source_hash()}".encode()).hexdigest()[:16]
    syn = synthesize_core(config, Path(build_root) / f"netlist-{key}", family=family,
                          synth_opts=synth_opts, progress=progress)
    verilog = Path(syn["netlist"])
    if mutate is not None:
        Path(test_dir).mkdir(parents=True, exist_ok=True)
        target = Path(test_dir) / f"netlist-{mutate}.v"
        syn = {**syn, "mutation": mutate_netlist(verilog, target, mutate)}
        verilog = target
    res = _run_on_core(qm, xq, lengths, verilog, info, golden, simulator=simulator,
                       sequence=sequence, keep_state=keep_state, build_root=build_root,
                       test_dir=test_dir, waves=waves, options=options, library=library,
                       weights=weights, streams=streams, stream_of=stream_of, order=order,
                       order_seed=order_seed)
    res["netlist"] = syn
    return res


def _check_simulator(simulator: str) -> None:
    if simulator not in SIMULATORS:
        raise GruHwError(f"simulator must be one of {', '.join(SIMULATORS)}, got {simulator!r}")
    if simulator == "amaranth":
        return
    from .sim.runner import ToolMissing, check_tool

    try:
        check_tool(simulator)
    except ToolMissing as exc:
        raise GruHwError(str(exc)) from None


def run_simulation(model, spec, inputs_path, output_path, *, simulator: str | None = None,
                   lanes: int, sequence: bool = False, keep_state: bool = False,
                   runtime_weights: bool = False, waves: str | Path | None = None,
                   build_dir: str | Path | None = None, profile=None, progress=None,
                   netlist: str | Path | None = None, weight_memory: str = "bram",
                   streams: int | None = None, order: str = "round_robin",
                   seed: int = 0) -> dict:
    """Simulate the generated core on INPUTS, compare with golden, write OUTPUTS; return a summary.

    The summary has ``match`` (bool), ``mismatch`` (the first difference: sequence, step, index,
    expected, got; None when all match), ``sequences``, ``cycles_mean`` and ``cycles`` (per
    sequence: from its first input beat accepted to its last output beat accepted). The output
    file holds ``y`` (N, O) real values, ``h`` (N, T, H) with ``sequence``, and ``cycles`` (N,).
    ``waves`` is a folder for the waveform; a failing run writes one anyway (into the build
    folder, which is then kept: its path is in the mismatch message). ``runtime_weights``
    simulates the core with the weight port and zeroed weight memories, loading the model's
    weights through the port before the first input. ``profile`` (a CoreProfile or its name)
    builds the core the way a board family builds it; ``weight_memory="spram"`` keeps the
    weights in (models of) iCE40 SPRAM, loaded through the port first. ``progress(done, total)``, when given,
    is told the sequences simulated (before the simulator starts and when it is done).

    ``netlist`` (a ``gru-hw build`` folder) simulates the core as synthesized for that build
    instead of its Verilog (:mod:`gru_hw.netlist`): the build's QuantSpec, lanes and profile are
    used (``spec``, ``lanes``, ``profile`` and ``runtime_weights`` are ignored) and the summary
    gains ``netlist`` (what was synthesized, with which primitive models). ``simulator=None``:
    Verilator, or for a netlist the first simulator the family's primitive models run in.

    ``streams`` S > 1 (None: 1, or a netlist build's own): a core with S hidden states;
    sequence n of INPUTS runs on stream n % S and the beats are sent interleaved in ``order``
    (:data:`gru_hw.streams.ORDERS`; ``seed`` for "random"); golden is
    :func:`gru_hw.streams.golden_streams` (with ``keep_state`` each stream's sequences continue
    its own state). The summary also gives ``streams``, ``interleave``, and the cycles per
    stream-step (time step of any stream): ``cycles_per_stream_step`` measured (the mean
    interval between accepted input beats), ``cycles_per_stream_step_model`` (the same from
    :meth:`gru_hw.schedule.Schedule.run_beats` for these beats), ``accepts_match_model``
    (every input beat accepted on the model's cycle) and ``cycles_per_stream_step_schedule``
    (the steady state of S streams round-robin, :attr:`Schedule.cycles_per_stream_step`).
    """
    from .fixed import to_float
    from .golden import check_inputs, quantize_inputs
    from .io import load_inputs, save_outputs
    from .quant import quantize_model
    from .streams import ORDERS, assign_streams, interleave

    nl = None
    if netlist is not None:
        from .netlist import from_build, primitive_library

        if simulator == "amaranth":
            raise GruHwError("a netlist runs in verilator or icarus, not in Amaranth's simulator")
        nl = from_build(netlist, model)
        simulator = simulator or primitive_library(nl["family"]).simulators[0]
        spec, lanes = nl["qm"].spec, nl["config"].lanes
        profile, runtime_weights = nl["config"].profile, False
        weight_memory = nl["config"].weight_memory
        built = getattr(nl["config"], "streams", 1)
        if streams is not None and streams != built:
            raise GruHwError(f"the build in {netlist} serves {built} stream(s), not {streams}",
                             subject="streams")
        streams = built
    streams = 1 if streams is None else streams
    if not isinstance(streams, int) or isinstance(streams, bool) or streams < 1:
        raise GruHwError(f"streams must be a positive integer, got {streams!r}",
                         subject="streams")
    if order not in ORDERS:
        raise GruHwError(f"interleaving must be one of {list(ORDERS)}, got {order!r}",
                         subject="order")
    simulator = simulator or SIMULATORS[0]
    _check_simulator(simulator)
    out_path = Path(output_path)
    if out_path.suffix.lower() != ".npz":
        raise GruHwError(f"{out_path}: output file must end in .npz")
    if out_path.parent and not out_path.parent.exists():
        raise GruHwError(f"{out_path}: directory {out_path.parent} does not exist")
    qm = quantize_model(model, spec)
    x, lengths = load_inputs(inputs_path, model.input_size)
    x, lengths = check_inputs(model, x, lengths, where=str(inputs_path))
    xq, _ = quantize_inputs(spec, x)
    if lengths is None:
        lengths = np.full(xq.shape[0], xq.shape[1], dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if nl is not None:
        config = nl["config"].with_(sequence=sequence)
    else:
        config = CoreConfig(qm, lanes, profile, sequence=sequence, runtime_weights=runtime_weights,
                            weight_memory=weight_memory, streams=streams)
    sid = assign_streams(int(xq.shape[0]), streams)
    golden = _golden(qm, xq, lengths, sequence=sequence, keep_state=keep_state, streams=streams,
                     stream_of=sid)
    order = order if streams > 1 else "blocks"
    beats = interleave(lengths, sid, order=order, seed=seed)
    waves_dir = Path(waves) if waves is not None else None
    if waves_dir is not None:
        if waves_dir.exists() and not waves_dir.is_dir():
            raise GruHwError(f"waves folder {waves_dir}: exists and is not a directory")
        waves_dir.mkdir(parents=True, exist_ok=True)

    temp = build_dir is None
    root = Path(tempfile.mkdtemp(prefix="gru-hw-sim-")) if temp else Path(build_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GruHwError(f"build folder {root}: cannot create it ({exc.strerror or exc})") from None
    keep = not temp
    if progress is not None:
        progress(0, int(xq.shape[0]))
    try:
        if nl is not None:
            res = netlist_run(qm, xq, lengths, config=config,
                              family=nl["family"], synth_opts=nl["synth_opts"], build_root=root,
                              test_dir=root / "run", simulator=simulator,
                              waves=waves_dir is not None, golden=golden, keep_state=keep_state,
                              stream_of=sid, order=order, order_seed=seed)
        elif simulator == "amaranth":
            res = _amaranth_run(qm, xq, lengths, golden, lanes=lanes, sequence=sequence,
                                keep_state=keep_state, root=root, waves_dir=waves_dir,
                                runtime_weights=runtime_weights, profile=profile,
                                weight_memory=weight_memory, streams=streams, stream_of=sid,
                                order=order, order_seed=seed)
        else:
            res = rtl_run(qm, xq, lengths, simulator=simulator, lanes=lanes, sequence=sequence,
                          keep_state=keep_state, build_root=root, test_dir=root / "run",
                          waves=waves_dir is not None, golden=golden,
                          runtime_weights=runtime_weights, profile=profile,
                          weight_memory=weight_memory, streams=streams, stream_of=sid,
                          order=order, order_seed=seed)
        if simulator != "amaranth" and res.get("waves") and waves_dir is not None:
            target = waves_dir / Path(res["waves"]).name
            shutil.copyfile(res["waves"], target)
            res["waves"] = str(target)
            if res.get("mismatch"):
                res["mismatch"] = res["mismatch"].split(" (waveform: ")[0] + \
                    f" (waveform: {target})"
        if progress is not None:
            progress(int(xq.shape[0]), int(xq.shape[0]))
        if not res["match"]:
            keep = True
        y_int = np.asarray(res["y"], dtype=np.int64)
        y = to_float(y_int, spec.out_fmt if qm.head_w is not None else spec.h_fmt)
        h = to_float(np.asarray(res["h"]), spec.h_fmt) if sequence else None
        cycles = np.asarray(res["cycles"], dtype=np.int64)
        save_outputs(out_path, y=y, h=h, cycles=cycles)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return {
        "match": bool(res["match"]),
        "mismatch": res.get("mismatch"),
        "sequences": int(xq.shape[0]),
        "cycles_mean": float(np.mean(cycles)) if cycles.size else 0.0,
        "cycles": [int(c) for c in cycles],
        "simulator": simulator,
        "runtime_weights": bool(nl["config"].runtime_weights if nl else runtime_weights),
        "profile": get_profile(profile).name,
        "weight_memory": weight_memory,
        "cycles_per_step_schedule": config.with_(streams=1).schedule.cycles_per_step,
        **_stream_step_summary(config.schedule, beats, sid, lengths, res.get("accept_cycles"),
                               order),
        "waves": res.get("waves"),
        "build_dir": None if temp and not keep else str(root),
        **({"netlist": {k: v for k, v in res["netlist"].items() if k != "key"}}
           if nl is not None else {}),
    }


def _stream_step_summary(sch, beats, sid, lengths, accepts, order: str) -> dict:
    """The cycles per stream-step: measured (mean interval between accepted input beats), the
    event model's for the same beats, and the steady state of the schedule."""
    model_acc, _ = sch.run_beats([(int(sid[n]), t == int(lengths[n]) - 1) for n, t in beats])
    out = {"streams": sch.streams, "interleave": order if sch.streams > 1 else None,
           "cycles_per_stream_step": None, "cycles_per_stream_step_model": None,
           "accepts_match_model": None,
           "cycles_per_stream_step_schedule": float(sch.cycles_per_stream_step)}
    n = len(model_acc)
    if n > 1:
        out["cycles_per_stream_step_model"] = (model_acc[-1] - model_acc[0]) / (n - 1)
    if accepts is not None:
        acc = np.asarray(accepts, dtype=np.int64)
        if acc.size == n and n > 1:
            out["cycles_per_stream_step"] = float(acc[-1] - acc[0]) / (n - 1)
        if acc.size == n:
            rel = acc - acc[0]
            out["accepts_match_model"] = bool(np.array_equal(
                rel, np.asarray(model_acc, dtype=np.int64) - model_acc[0]))
    return out


def _amaranth_run(qm, xq, lengths, golden, *, lanes, sequence, keep_state, root: Path,
                  waves_dir: Path | None, runtime_weights: bool = False, profile=None,
                  weight_memory: str = "bram", streams: int = 1, stream_of=None,
                  order: str = "round_robin", order_seed: int = 0) -> dict:
    from .amaranth_sim import simulate

    accepts: list[int] = []

    def run(vcd):
        accepts.clear()
        kw = {"streams": streams, "stream_of": stream_of, "order": order,
              "order_seed": order_seed, "accepts": accepts}
        if runtime_weights:  # zero memories, the model's weights loaded through the port
            return simulate(qm, xq, lengths, lanes=lanes, sequence=sequence,
                            keep_state=keep_state, vcd=vcd, runtime_weights=True,
                            init_weights=False, load=qm, profile=profile,
                            weight_memory=weight_memory, **kw)
        return simulate(qm, xq, lengths, lanes=lanes, sequence=sequence, keep_state=keep_state,
                        vcd=vcd, profile=profile, weight_memory=weight_memory, **kw)

    vcd = waves_dir / "waves.vcd" if waves_dir is not None else None
    y, h, cycles = run(vcd)
    acc = list(accepts)
    msg = first_mismatch(golden.y, y, lengths, exp_h=golden.h if sequence else None,
                         got_h=h if sequence else None)
    if msg is not None and vcd is None:
        vcd = root / "waves.vcd"
        run(vcd)
    if msg is not None:
        msg += f" (waveform: {vcd})"
    return {"match": msg is None, "mismatch": msg, "y": y, "h": h, "cycles": cycles,
            "waves": str(vcd) if vcd is not None else None,
            "accept_cycles": np.asarray(acc, dtype=np.int64) - (acc[0] if acc else 0)}
