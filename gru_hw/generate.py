"""Generate the core's Verilog and its ``spec.json`` (formats, schedule, interface)."""

from __future__ import annotations

import json
from pathlib import Path

from amaranth.back import verilog
from amaranth.lib import data

from .errors import GruHwError

__all__ = ["generate", "port_layout"]


def _fields(layout: data.StructLayout) -> tuple[dict, dict]:
    """Return (field -> [lsb, width], array fields -> {count, width, signed})."""
    bits, arrays = {}, {}
    for name, field in layout:
        width = field.width
        bits[name] = [field.offset, width]
        shape = field.shape
        if isinstance(shape, data.ArrayLayout):
            elem = shape.elem_shape
            arrays[name] = {"count": shape.length, "width": elem.width, "signed": bool(elem.signed)}
    return bits, arrays


def port_layout(core) -> list[dict]:
    """Return the Verilog ports of a GRUCore: name, direction, width, payload layout."""
    i_bits, i_arrays = _fields(core.i_layout)
    o_bits, o_arrays = _fields(core.o_layout)
    weights = []
    if core.config.weight_port:
        w_bits, _ = _fields(core.w_layout)
        weights = [
            {"name": "w_stream__payload", "direction": "input", "width": core.w_layout.size,
             "fields": w_bits, "arrays": {}},
            {"name": "w_stream__valid", "direction": "input", "width": 1},
            {"name": "w_stream__ready", "direction": "output", "width": 1},
        ]
    return weights + [
        {"name": "clk", "direction": "input", "width": 1},
        {"name": "rst", "direction": "input", "width": 1},
        {"name": "i_stream__payload", "direction": "input", "width": core.i_layout.size,
         "fields": i_bits, "arrays": i_arrays},
        {"name": "i_stream__valid", "direction": "input", "width": 1},
        {"name": "i_stream__ready", "direction": "output", "width": 1},
        {"name": "o_stream__payload", "direction": "output", "width": core.o_layout.size,
         "fields": o_bits, "arrays": o_arrays},
        {"name": "o_stream__valid", "direction": "output", "width": 1},
        {"name": "o_stream__ready", "direction": "input", "width": 1},
    ]


def weight_port_info(core) -> dict:
    """Return spec.json's ``weights`` section: the weight port's address map and word format."""
    from .protocol import weights_checksum

    mm = core.memory_map
    image = [w for _, w in mm.image()]
    load = mm.load_image()
    return {
        "port": "w_stream",
        **mm.to_json(),
        "words": len(image),
        "checksum_crc16": weights_checksum(image, mm.word_bytes),
        "initialised": core.config.init_weights and not mm.packed,
        "writable_regions": [r.name for r in (mm.regions() if core.runtime_weights
                                                else mm.boot_regions())],
        "load_words": len(load),
        "file": WEIGHTS_FILE,
        "rules": "a load is a packet of beats {addr, data, last} ending with last=1; beats wait "
                 "(ready low) while a sequence is in flight (first input beat accepted .. last "
                 "output beat taken); an offered packet holds the next sequence back until it "
                 "is written; data is the word, sign-extended to data_width; word i of a region "
                 "goes to base + i; reset does not clear the memories",
    }


WEIGHTS_FILE = "weights.npz"
#: The QuantSpec the core was generated with (accepted by every ``--qconfig``).
QCONFIG_FILE = "qconfig.json"


def generate(qm, out_dir, *, lanes: int, sequence: bool = False, name: str = "gru_core",
             profile=None, runtime_weights: bool = False,
             init_weights: bool = True, weight_memory: str = "bram", streams: int = 1) -> dict:
    """Write ``<name>.v``, ``spec.json`` and ``qconfig.json`` into ``out_dir``; return spec.json.

    The Verilog module is named ``name``; its ports are ``clk``, ``rst`` and the two streams'
    ``*__payload`` / ``*__valid`` / ``*__ready``. Memories are initialised inside the Verilog.
    With ``runtime_weights`` the core also has the weight stream port ``w_stream`` (see
    ``spec.json``'s ``weights`` section), ``weights.npz`` holds the model's words for it
    (``addr``, ``data``), and ``init_weights=False`` leaves the weight memories zero at power-up.
    ``qconfig.json`` is the QuantSpec used (see :meth:`gru_hw.quant.QuantSpec.load`).
    ``weight_memory="spram"`` keeps the weights in SB_SPRAM256KA cells (simulate with Yosys's
    ice40 cell models), which start empty: the port is there, and ``weights.npz`` holds the words
    to load through it before the first input (a fixed build: the packed rows only).
    ``streams`` S > 1: the core serves S interleaved sequences, a hidden state each; both stream
    payloads then end with a ``stream`` field (see ``spec.json``'s ``ports`` and ``streams``).

    The files are written into a temporary folder beside ``out_dir`` and moved into it only when
    all of them are done: a failure leaves ``out_dir`` as it was (and creates nothing); files of
    an earlier generate that this one does not write (``weights.npz``) are removed.
    """
    from .io import output_dir

    if not name.isidentifier():
        raise GruHwError(f"module name must be a Verilog identifier, got {name!r}")
    out = Path(out_dir)
    with output_dir(out, replaces=_stale_names(out, name)) as tmp:
        info = _generate_into(tmp, qm, lanes=lanes, sequence=sequence, name=name,
                              profile=profile, runtime_weights=runtime_weights,
                              init_weights=init_weights, weight_memory=weight_memory,
                              streams=streams)
    return info


def _stale_names(out: Path, name: str) -> list[str]:
    """Files an earlier generate may have left in ``out`` (removed unless written again)."""
    names = [f"{name}.v", "spec.json", WEIGHTS_FILE, QCONFIG_FILE]
    try:
        old = json.loads((out / "spec.json").read_text())
    except (OSError, ValueError):
        return names
    if isinstance(old, dict) and old.get("format") == "gru-hw-core":
        v = old.get("verilog")
        if isinstance(v, str) and v.endswith(".v") and Path(v).name == v:
            names.append(v)
    return names


def _generate_into(out: Path, qm, *, lanes: int, sequence: bool, name: str, profile,
                   runtime_weights: bool, init_weights: bool, weight_memory: str,
                   streams: int = 1) -> dict:
    from .gateware import GRUCore

    core = GRUCore(qm, lanes, sequence=sequence, profile=profile,
                   runtime_weights=runtime_weights, init_weights=init_weights,
                   weight_memory=weight_memory, streams=streams)
    text = verilog.convert(core, name=name, emit_src=False)
    vfile = out / f"{name}.v"
    vfile.write_text(text)
    sch = core.schedule
    spec = qm.spec
    info = {
        "format": "gru-hw-core",
        "version": 1,
        "name": name,
        "verilog": vfile.name,
        "variant": "reset_after" if qm.reset_after else "reset_before",
        "sequence": bool(sequence),
        "lanes": lanes,
        "profile": core.profile.to_json(),
        "weight_memory": weight_memory,
        "streams": streams,
        "model": {
            "input_size": qm.input_size,
            "hidden_sizes": list(qm.hidden_sizes),
            "num_layers": len(qm.hidden_sizes),
            "head_size": int(qm.head_w.shape[0]) if qm.head_w is not None else None,
            "output_size": qm.output_size,
        },
        "interface": {
            "x_width": spec.x_fmt.width,
            "x_fmt": spec.x_fmt.to_json(),
            "out_width": core.out_width,
            "y_fmt": (spec.h_fmt if sequence else spec.out_fmt).to_json(),
            "y_size": core.y_size,
            "y_head_fmt": spec.out_fmt.to_json() if (sequence and qm.head_w is not None) else None,
            "output_beats": "one per input step (sequence)" if sequence
            else "one per sequence, after the beat with last=1",
            "streams": streams,
            "stream_ids": ("each input beat names its stream (i_stream.payload.stream, "
                           f"0..{streams - 1}); the core keeps a hidden state per stream, a "
                           "stream's steps must come in order, other streams' anywhere between; "
                           "each output beat names its stream (o_stream.payload.stream), in the "
                           "order the steps were accepted") if streams > 1 else None,
        },
        "ports": port_layout(core),
        "schedule": sch.summary(),
        "resources": {
            "mac_units": sch.mac_units,
            "multipliers": sch.multipliers,
            "dsp_multipliers": sch.dsp_multipliers,
            "memory_bits": core.memory_map.memory_bits["total"],
            "memory_bits_by_memory": core.memory_map.memory_bits,
            "accumulator_width": core.memory_map.acc_width,
            "weight_width": core.memory_map.weight_width,
        },
        "quant": spec.to_json(),
    }
    if core.config.weight_port:
        import numpy as np

        info["runtime_weights"] = bool(runtime_weights)
        info["weights"] = weight_port_info(core)
        image = core.memory_map.load_image() if not runtime_weights else core.memory_map.image()
        np.savez(out / WEIGHTS_FILE, addr=np.array([a for a, _ in image], dtype=np.int64),
                 data=np.array([w for _, w in image], dtype=np.int64))
    qm.spec.save(out / QCONFIG_FILE)
    info["qconfig"] = QCONFIG_FILE
    (out / "spec.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
