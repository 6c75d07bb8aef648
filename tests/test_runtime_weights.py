"""Run-time weights: the core's weight port, in Amaranth's simulator and in Verilator.

A core is built for model A with its weight memories left zero, model B (same shape, same
QuantSpec) is loaded through the port, and every output must equal B's golden model exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import random_model
from gru_hw.amaranth_sim import simulate
from gru_hw.cli import main
from gru_hw.errors import GruHwError
from gru_hw.config import CoreConfig
from gru_hw.gateware import GRUCore
from gru_hw.golden import int_forward_q
from gru_hw.protocol import weights_checksum
from gru_hw.quant import QuantLayer, QuantModel, choose_spec, quantize_model
from gru_hw.simulate import rtl_run
from gru_hw.sim.runner import SIMULATORS
from gru_hw.sim.testing import build_root, require_tool


def _pair(seed: int, inputs: int, hidden: list[int], *, reset_after: bool, head: int | None,
          weight_bits: int = 16, act_bits: int = 16):
    """Two models of one shape quantized with A's spec: (qa, qb)."""
    rng = np.random.default_rng(seed)
    ma = random_model(rng, inputs, hidden, reset_after=reset_after, head=head)
    mb = random_model(rng, inputs, hidden, reset_after=reset_after, head=head)
    spec = choose_spec(ma, weight_bits, act_bits)
    return rng, quantize_model(ma, spec), quantize_model(mb, spec)


def _inputs(rng, qm, n: int, t: int):
    f = qm.spec.x_fmt
    xq = rng.integers(f.min_int, f.max_int + 1, (n, t, qm.input_size))
    lengths = rng.integers(1, t + 1, n)
    lengths[0] = t
    return xq, lengths


@pytest.mark.parametrize("reset_after,hidden,head,lanes", [
    (False, [5, 4], 2, 3),
    (True, [6], 3, 4),
    (True, [4, 3, 5], None, 2),
])
def test_loaded_model_is_exact(reset_after, hidden, head, lanes):
    rng, qa, qb = _pair(3, 3, hidden, reset_after=reset_after, head=head, weight_bits=10,
                        act_bits=12)
    xq, lengths = _inputs(rng, qa, 4, 5)
    gb = int_forward_q(qb, xq, lengths, sequence=True)
    assert not np.array_equal(gb.y, int_forward_q(qa, xq, lengths).y)  # the load must matter
    vp = list(rng.random(17) < 0.7)
    rp = list(rng.random(13) < 0.6)
    wp = list(rng.random(11) < 0.5)
    vp[0] = rp[0] = wp[0] = True
    y, h, _ = simulate(qa, xq, lengths, lanes=lanes, sequence=True, runtime_weights=True,
                       init_weights=False, load=qb, valid_pattern=vp, ready_pattern=rp,
                       weight_pattern=wp)
    np.testing.assert_array_equal(h, gb.h)
    np.testing.assert_array_equal(y, gb.y)


def test_runtime_core_runs_at_the_schedule_with_its_own_weights():
    """With the model's weights as power-up contents, the runtime core is the fixed core."""
    rng, qa, _ = _pair(4, 3, [6, 5], reset_after=False, head=2)
    xq, lengths = _inputs(rng, qa, 3, 4)
    y0, _, c0 = simulate(qa, xq, lengths, lanes=4)
    y1, _, c1 = simulate(qa, xq, lengths, lanes=4, runtime_weights=True)
    np.testing.assert_array_equal(y1, int_forward_q(qa, xq, lengths).y)
    np.testing.assert_array_equal(y0, y1)
    assert list(c0) == list(c1)


def test_load_waits_for_the_sequence_in_flight():
    """Offered during sequence 0, the packet waits for its output, then holds sequence 1 back."""
    rng, qa, qb = _pair(5, 3, [5, 4], reset_after=False, head=2)
    xq, lengths = _inputs(rng, qa, 3, 4)
    lengths[:] = 4
    ga, gb = int_forward_q(qa, xq, lengths), int_forward_q(qb, xq, lengths)
    assert not np.array_equal(ga.y[0], gb.y[0])
    y, _, _ = simulate(qa, xq, lengths, lanes=3, runtime_weights=True, load=qb, load_after=1,
                       ready_pattern=[1, 0, 0], weight_pattern=[1, 0, 0])
    np.testing.assert_array_equal(y[0], ga.y[0])
    np.testing.assert_array_equal(y[1:], gb.y[1:])


def _extreme_model(qm, value: str) -> QuantModel:
    """Every weight and bias at its format's most negative (or most positive) value."""
    spec = qm.spec

    def fill(a, fmt):
        return np.full_like(a, fmt.min_int if value == "min" else fmt.max_int)

    layers = tuple(QuantLayer(fill(q.w_ih, spec.layers[k].w_ih_fmt),
                              fill(q.w_hh, spec.layers[k].w_hh_fmt),
                              fill(q.b_ih, spec.b_ih_fmt(k)), fill(q.b_hh, spec.b_hh_fmt(k)))
                   for k, q in enumerate(qm.layers))
    hw = fill(qm.head_w, spec.head.w_fmt) if qm.head_w is not None else None
    hb = fill(qm.head_b, spec.head_b_fmt()) if qm.head_b is not None else None
    return QuantModel(spec, layers, hw, hb, qm.reset_after)


@pytest.mark.parametrize("value", ["min", "max"])
def test_accumulators_hold_any_weights_of_the_formats(value):
    """The runtime core is sized by the formats: extreme weights and inputs stay exact."""
    rng, qa, _ = _pair(6, 4, [3], reset_after=True, head=2, weight_bits=8, act_bits=8)
    qx = _extreme_model(qa, value)
    f = qa.spec.x_fmt
    xq = np.array([[[f.min_int] * 4] * 3, [[f.max_int] * 4] * 3])
    y, h, _ = simulate(qa, xq, None, lanes=2, sequence=True, runtime_weights=True,
                       init_weights=False, load=qx)
    g = int_forward_q(qx, xq, np.array([3, 3]), sequence=True)
    np.testing.assert_array_equal(h, g.h)
    np.testing.assert_array_equal(y, g.y)


def test_weight_map_regions_and_refusals():
    _, qa, qb = _pair(7, 3, [5], reset_after=True, head=2)
    mm = CoreConfig(qa, 4, runtime_weights=True).memory_map
    regions = mm.regions(qb)
    assert [r.name for r in regions] == ["lane0", "lane1", "lane2", "lane3", "bias"]
    assert [r.base for r in regions] == [i << mm.offset_bits for i in range(5)]
    assert all(len(r.words) == mm.weight_depth for r in regions[:4])
    assert len(regions[4].words) == mm.schedule.bias_rows
    # every weight and bias of B appears once (the padding of partial groups is zero)
    n_w = sum(q.w_ih.size + q.w_hh.size for q in qb.layers) + qb.head_w.size
    nonzero = sum(int(np.count_nonzero(r.words)) for r in regions[:4])
    all_w = np.concatenate([q.w_ih.ravel() for q in qb.layers] + [q.w_hh.ravel() for q in qb.layers]
                           + [qb.head_w.ravel()])
    assert nonzero == int(np.count_nonzero(all_w)) and n_w == all_w.size
    image = mm.image(qb)
    assert max(a for a, _ in image) < 1 << mm.addr_width
    # another shape, or other formats, are refused by name
    _, qc, _ = _pair(7, 3, [6], reset_after=True, head=2)
    with pytest.raises(GruHwError, match=r"does not have the core's shape"):
        mm.image(qc)
    other = quantize_model(random_model(np.random.default_rng(1), 3, [5], head=2),
                           choose_spec(random_model(np.random.default_rng(2), 3, [5], head=2), 8, 8))
    with pytest.raises(GruHwError, match=r"other formats than the core's"):
        mm.image(other)


def test_host_weight_map_is_the_cores():
    """The host learns the map without gateware; it is the one the core is built with."""
    from gru_hw import link

    _, qa, qb = _pair(5, 3, [4, 3], reset_after=False, head=2)
    core = GRUCore(qa, 3, runtime_weights=True)
    host = link.weight_map(qa, 3)
    assert host.to_json() == core.memory_map.to_json()
    assert host.image(qb) == core.memory_map.image(qb)
    core._MustUse__silence = True


# ---- the generated Verilog in Verilator --------------------------------------------------------
@pytest.fixture(scope="module")
def sim_root(request, tmp_path_factory):
    return build_root(request.config, tmp_path_factory)


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_rtl_two_layer_reset_before_loaded_at_run_time(simulator, sim_root, tmp_path):
    """Issue 7: a two-layer reset_before model loaded through the port, exact in Verilator
    (and Icarus).

    The core is generated from model A with zeroed weight memories; B is loaded; the run has idle
    cycles, backpressure and a mid-stream reset (the weights survive it: no reload after).
    """
    require_tool(simulator)
    rng, qa, qb = _pair(8, 4, [6, 5], reset_after=False, head=3)
    xq, lengths = _inputs(rng, qa, 5, 6)
    beats = int(lengths.sum())
    res = rtl_run(qb, xq, lengths, simulator=simulator, lanes=3, sequence=True,
                  build_root=sim_root, test_dir=tmp_path, runtime_weights=True, core_qm=qa,
                  options={"idle": [0, 0, 1, 0, 1], "backpressure": {"random": 0.4, "seed": 3},
                           "reset_after_beats": beats // 2})
    assert res["match"], res["mismatch"]
    image = CoreConfig(qa, 3, sequence=True, runtime_weights=True).memory_map.image(qb)
    assert res["weights_loaded"] == len(image)
    g = int_forward_q(qb, xq, lengths, sequence=True)
    np.testing.assert_array_equal(res["h"], g.h)
    np.testing.assert_array_equal(res["y"], g.y)
    assert not np.array_equal(g.y, int_forward_q(qa, xq, lengths).y)


def test_verilator_keep_state_chunks_equal_the_unbroken_sequence(sim_root, tmp_path):
    """Issue 7: one sequence cut into two chunks with keep-state gives the unbroken outputs."""
    require_tool("verilator")
    rng, qa, _ = _pair(9, 4, [6, 5], reset_after=True, head=None)
    f = qa.spec.x_fmt
    whole = rng.integers(f.min_int, f.max_int + 1, (1, 9, 4))
    chunks = np.zeros((2, 5, 4), dtype=np.int64)
    chunks[0, :5], chunks[1, :4] = whole[0, :5], whole[0, 5:]
    res = rtl_run(qa, chunks, np.array([5, 4]), simulator="verilator", lanes=4, sequence=True,
                  keep_state=True, build_root=sim_root, test_dir=tmp_path,
                  options={"backpressure": {"random": 0.3, "seed": 5}})
    assert res["match"], res["mismatch"]
    unbroken = int_forward_q(qa, whole, np.array([9]), sequence=True)
    np.testing.assert_array_equal(res["h"][0, :5], unbroken.h[0, :5])
    np.testing.assert_array_equal(res["h"][1, :4], unbroken.h[0, 5:])
    np.testing.assert_array_equal(res["y"][1], unbroken.y[0])


# ---- the command line --------------------------------------------------------------------------
def test_cli_generate_and_simulate_runtime_weights(tmp_path, capsys):
    require_tool("verilator")
    rng = np.random.default_rng(10)
    model = random_model(rng, 3, [5, 4], reset_after=False, head=2)
    mpath = tmp_path / "m.npz"
    arrays = {}
    for k, layer in enumerate(model.layers):
        arrays.update({f"w_ih_{k}": layer.w_ih, f"w_hh_{k}": layer.w_hh, f"b_ih_{k}": layer.b_ih,
                       f"b_hh_{k}": layer.b_hh})
    np.savez(mpath, head_w=model.head.w, head_b=model.head.b, reset_after=False, **arrays)
    assert main(["generate", str(mpath), "-o", str(tmp_path / "g"), "--lanes", "3",
                 "--runtime-weights"]) == 0
    info = json.loads((tmp_path / "g" / "spec.json").read_text())
    w = info["weights"]
    assert info["runtime_weights"] and w["port"] == "w_stream"
    assert "w_stream__payload" in (tmp_path / "g" / "gru_core.v").read_text()
    with np.load(tmp_path / "g" / "weights.npz") as f:
        addr, data = f["addr"], f["data"]
    assert len(addr) == w["words"] == sum(r["words"] for r in w["regions"])
    assert w["checksum_crc16"] == weights_checksum(data, w["word_bytes"])
    assert f"CRC-16 0x{w['checksum_crc16']:04x}" in capsys.readouterr().out
    np.savez(tmp_path / "in.npz", x=rng.normal(0, 1, (3, 5, 3)), lengths=np.array([5, 2, 4]))
    for simulator in ("verilator", "amaranth"):
        code = main(["simulate", str(mpath), str(tmp_path / "in.npz"), "-o",
                     str(tmp_path / "o.npz"), "--lanes", "3", "--runtime-weights",
                     "--simulator", simulator])
        out = capsys.readouterr().out
        assert code == 0 and "all outputs equal golden (bit-exact) (weights loaded" in out, simulator
