"""What ``gru-hw info`` reports: sizes, formats, PWL error bounds, schedule and resources."""

from __future__ import annotations

from .model import GRUModel
from .quant import QuantSpec, quantize_model


def pwl_info(spec: QuantSpec) -> dict:
    """Return each PWL unit's design and its exhaustively measured max error."""
    out = {}
    for name, table in (("sigmoid", spec.sigmoid_table()), ("tanh", spec.tanh_table())):
        s = table.spec
        out[name] = {
            "segments": s.segments,
            "range": [-s.range, s.range],
            "in_fmt": str(s.in_fmt),
            "out_fmt": str(s.out_fmt),
            "max_abs_error": table.max_error,
            "inputs_checked": 1 << s.in_fmt.width,
        }
    return out


def model_info(model: GRUModel, spec: QuantSpec, *, lanes: int, steps: int | None = None,
               profile=None, runtime_weights: bool = False) -> dict:
    """Return the info dict (JSON keys are part of the interface: keep them).

    ``profile`` and ``runtime_weights`` describe the core as a build would make it (a board's
    family chooses the profile), so cycles and memory bits are that core's.
    """
    from .config import CoreConfig

    qm = quantize_model(model, spec)
    config = CoreConfig(qm, lanes, profile, runtime_weights=runtime_weights)
    sched = config.schedule
    info = {
        "model": model.describe(),
        "source": model.source,
        "input_size": model.input_size,
        "hidden_sizes": [layer.hidden_size for layer in model.layers],
        "num_layers": model.num_layers,
        "output_size": model.output_size,
        "head": model.head is not None,
        "variant": model.variant,
        "reset_after": model.reset_after,
        "parameters": model.num_parameters,
        "formats": _formats(spec),
        "pwl": pwl_info(spec),
        "lanes": lanes,
        "profile": config.profile.name,
        "cycles_per_step": sched.cycles_per_step,
        "ideal_cycles_per_step": sched.ideal_cycles_per_step,
        "multipliers": sched.multipliers,
        "memory_bits": config.memory_map.memory_bits["total"],
        "memory_bits_by_memory": config.memory_map.memory_bits,
        "accumulator_width": config.memory_map.acc_width,
        "quant": spec.to_json(),
    }
    if steps is not None:
        info["steps"] = steps
        info["cycles_per_sequence"] = sched.cycles_per_sequence(steps)
    return info


def _formats(spec: QuantSpec) -> dict:
    f = {
        "weight_bits": spec.weight_bits,
        "act_bits": spec.act_bits,
        "x": str(spec.x_fmt),
        "h": str(spec.h_fmt),
        "gate": str(spec.gate_fmt),
        "preact": str(spec.preact_fmt),
        "calibrated": spec.calibrated,
        "layers": [],
    }
    for k, lf in enumerate(spec.layers):
        d = {"w_ih": str(lf.w_ih_fmt), "w_hh": str(lf.w_hh_fmt), "b_ih": str(spec.b_ih_fmt(k)),
             "b_hh": str(spec.b_hh_fmt(k))}
        if lf.hn_fmt is not None:
            d["hn"] = str(lf.hn_fmt)
        f["layers"].append(d)
    if spec.head is not None:
        f["head"] = {"w": str(spec.head.w_fmt), "b": str(spec.head_b_fmt()), "out": str(spec.head.out_fmt)}
    return f


def format_info(info: dict) -> str:
    """Render the info dict as a short human summary."""
    f = info["formats"]
    lines = [
        info["model"],
        f"  formats: weights {f['weight_bits']} bit, activations {f['act_bits']} bit; "
        f"x {f['x']}{' (calibrated)' if f['calibrated'] else ''}, h {f['h']}, gates {f['gate']}, "
        f"pre-activations {f['preact']}",
    ]
    for k, lf in enumerate(f["layers"]):
        extra = f", hn {lf['hn']}" if "hn" in lf else ""
        lines.append(f"  layer {k}: W_ih {lf['w_ih']}, W_hh {lf['w_hh']}, "
                     f"b_ih {lf['b_ih']}, b_hh {lf['b_hh']}{extra}")
    if "head" in f:
        h = f["head"]
        lines.append(f"  head: W {h['w']}, b {h['b']}, out {h['out']}")
    for name, p in info["pwl"].items():
        lines.append(f"  {name}: {p['segments']} segments on [{p['range'][0]:g}, {p['range'][1]:g}), "
                     f"max |error| {p['max_abs_error']:.6f} over all {p['inputs_checked']} inputs")
    lines.append(f"  schedule: {info['lanes']} lane(s), {info['cycles_per_step']} cycles/step "
                 f"(ideal {info['ideal_cycles_per_step']}, "
                 f"{info['cycles_per_step'] / info['ideal_cycles_per_step']:.3f}x)")
    if "cycles_per_sequence" in info:
        lines.append(f"  {info['steps']} steps: {info['cycles_per_sequence']} cycles/sequence")
    lines.append(f"  resources: {info['multipliers']} multipliers, {info['memory_bits']} memory bits")
    return "\n".join(lines)
