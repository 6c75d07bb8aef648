"""The nonlinear tail for a tail width K = 3U > 1: U hidden units per cycle.

Each unit lane has its own sigmoids (r and z), tanh, requantizers and products; the head's K
rows of a beat have K requantizers. The lanes compute exactly what :class:`gru_hw.gateware.
tail.Tail` computes, with the same latencies (:class:`gru_hw.gateware.tail.TailLatency`).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from .activation import PWLUnit
from .arith import MUL_LATENCY, RQ_LATENCY, delay, delay_ram, mul_pipe, rq_pipe
from .chain import ROWSET_CODE
from .chain_wide import beat_layout
from .state import StateGeometry
from .tail import Tail, TailHelpers, TailLatency

__all__ = ["UnitTail"]


class UnitTail(TailHelpers, wiring.Component):
    """Turns beats of gate rows into gates, the new hidden state and the head's outputs,
    U = K / 3 hidden units per beat.

    Unit lane u takes, of a beat b (units ``b*U + u``): in rowset "all" (reset_after) slots
    3u, 3u+1, 3u+2 (r, z, n); in "rz" (reset_before) slots 2u, 2u+1 (r, z); in "n" slot u.
    Head beats: slot i is head output ``b*K + i``. A unit whose rows a lane group boundary
    splits arrives in two partial beats (r before z before n): a reset_after lane keeps the last
    r and z it computed for the n row that follows (the tail width 1 core reads them back from
    the gate memories).

    Ports:
      * ``beat`` (in, :func:`gru_hw.gateware.chain_wide.beat_layout`): one beat per
        :meth:`interval_of` cycles at most.
      * memory ports of :class:`gru_hw.gateware.state.StateMemories` (flipped), one per way
        (lane u uses way u): ``upd_rd``, ``st_wr``, and for reset_before ``rh_h_rd``, ``rh_wr``,
        ``z_wr``, ``z_rd``.
      * ``cur``, ``zero_cur``, ``top_oen`` (in), ``n_done``/``n_layer``, ``rz_done``/
        ``rz_layer``, ``head_done``, ``y``, ``y_head`` (out): as :class:`gru_hw.gateware.tail.
        Tail`.

    Latency (row in to result written): :class:`TailLatency` ``rz``, ``n``, ``head``, as Tail.
    Throughput: one beat per cycle, or one per SEQ_STEPS cycles with the "seq" multipliers.
    """

    interval_of = staticmethod(Tail.interval_of)

    def __init__(self, config) -> None:
        self.config = config
        spec, qm = config.spec, config.qm
        self.k = config.profile.tail_width
        self.u = self.k // 3
        assert self.k > 1 and self.k % 3 == 0, self.k
        self.geo = geo = StateGeometry(config)
        self.latencies = TailLatency(config.profile, qm.reset_after)
        self.hs = list(qm.hidden_sizes)
        self.nl = len(self.hs)
        self.ml = MUL_LATENCY[config.profile.tail_mul]
        self.fx = [spec.acc_x_frac(k) for k in range(self.nl)]
        self.fh = [spec.acc_h_frac(k) for k in range(self.nl)]
        h_w, g_w = spec.h_fmt.width, spec.gate_fmt.width
        if config.sequence:
            self.out_width, self.y_size = h_w, self.hs[-1]
        else:
            self.out_width, self.y_size = spec.out_fmt.width, qm.output_size

        def rd(aw, width):
            return In(ReadPort.Signature(addr_width=aw, shape=signed(width))).array(self.u)

        def wr(aw, width):
            return In(WritePort.Signature(addr_width=aw, shape=signed(width))).array(self.u)

        nl, ns = self.nl, config.streams
        sa, ga = geo.sa + geo.sb, geo.ga + geo.sb
        members = {
            "beat": In(beat_layout(config)),
            "upd_rd": rd(sa, h_w), "st_wr": wr(sa, h_w),
            "cur": In(ns * nl), "zero_cur": In(ns * nl), "top_oen": In(ns),
            "n_done": Out(1), "n_layer": Out(range(max(nl, 2))),
            "rz_done": Out(1), "rz_layer": Out(range(max(nl, 2))), "head_done": Out(1),
            "y": Out(data.ArrayLayout(signed(self.out_width), self.y_size)),
        }
        if ns > 1:
            members.update(n_stream=Out(range(ns)), rz_stream=Out(range(ns)))
        if not qm.reset_after:
            members.update(rh_h_rd=rd(sa, h_w), rh_wr=wr(ga, h_w),
                           z_wr=wr(ga, g_w), z_rd=rd(ga, g_w))
        if config.sequence and qm.head_w is not None:
            members["y_head"] = Out(data.ArrayLayout(signed(spec.out_fmt.width),
                                                     qm.output_size))
        super().__init__(members)

    # ---- the beat's tags and valid bits, delayed (each stage built once) -----------------------
    def _tag(self, m, name, n):
        """The beat's ``layer`` / ``beat`` tag ``n`` cycles after it entered."""
        key = (name, n)
        if key not in self._cache:
            prev = getattr(self.beat, name) if n == 0 else self._tag(m, name, n - 1)
            self._cache[key] = prev if n == 0 else delay(m, prev, 1, f"t_{name}{n - 1}")
        return self._cache[key]

    def _v(self, m, slot, rowset, n):
        """Slot ``slot`` held a row of ``rowset`` in the beat that entered ``n`` cycles ago."""
        key = ("v", slot, rowset, n)
        if key not in self._cache:
            if n == 0:
                v = Signal(name=f"v_{rowset}{slot}")
                m.d.comb += v.eq(self.beat.valid[slot] & (self.beat.rowset == ROWSET_CODE[rowset]))
            else:
                v = delay(m, self._v(m, slot, rowset, n - 1), 1, f"v_{rowset}{slot}_{n - 1}")
            self._cache[key] = v
        return self._cache[key]

    def _stream(self, m, n):
        """The beat's stream ``n`` cycles after it entered (Const 0 with one stream)."""
        return Const(0, 1) if self.config.streams == 1 else self._tag(m, "stream", n)

    def _h_addr(self, m, layer, beat, bank_sel, name, stream):
        """State row (in every way) of the units of ``beat`` in ``layer``'s bank ``bank_sel``,
        in ``stream``'s copy."""
        geo = self.geo
        row = (self._sel(m, layer, geo.sbase, f"sbase_{name}") +
               Mux(bank_sel, self._sel(m, layer, geo.hq, f"hq_{name}"), 0) + beat)
        return geo.addr(row, stream, geo.sa)

    def _gate_addr(self, m, layer, beat, name, stream):
        row = self._sel(m, layer, self.geo.gbase, f"gbase_{name}") + beat
        return self.geo.addr(row, stream, self.geo.ga)

    def _last(self, m, u, layer, beat, name):
        """Lane u's unit of ``beat`` is the last of ``layer``."""
        hs, U = self.hs, self.u
        out = Signal(name=name)
        with m.Switch(layer):
            for k, h in enumerate(hs):
                with m.Case(k):
                    if (h - 1) % U == u:
                        m.d.comb += out.eq(beat == (h - 1) // U)
        return out

    # ---- the datapath ----------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        self._cache = {}
        n_last, rz_last = [], []
        for u in range(self.u):
            if self.config.qm.reset_after:
                n_last.append(self._lane_after(m, u))
            else:
                rz, n = self._lane_before(m, u)
                rz_last.append(rz)
                n_last.append(n)
        lat = self.latencies
        m.d.comb += [self.n_done.eq(_any(n_last)),
                     self.n_layer.eq(self._tag(m, "layer", lat.n))]
        if self.config.streams > 1:
            m.d.comb += self.n_stream.eq(self._stream(m, lat.n))
        if rz_last:
            m.d.comb += [self.rz_done.eq(_any(rz_last)),
                         self.rz_layer.eq(self._tag(m, "layer", lat.rz))]
            if self.config.streams > 1:
                m.d.comb += self.rz_stream.eq(self._stream(m, lat.rz))
        self._head(m)
        return m

    def _gate(self, m, u, slot, point, rowset):
        """Sum, requantize (point r or z) and sigmoid of a slot's row: the gate at stage
        1 + RQ_LATENCY + the PWL latency."""
        cfg = self.config
        spec = cfg.spec
        t = self.beat
        s, f = self._align_sum(m, t.layer, t.ax[slot], self.fx, t.ah[slot], self.fh,
                               f"s_{point}{u}")
        pre = self._rq_layers(m, s, f, lambda k: spec.preact_fmt, point,
                              self._tag(m, "layer", 1 + RQ_LATENCY), f"rq_{point}{u}")
        sig = PWLUnit(spec.sigmoid_table(), cfg.profile.tail_mul)
        m.submodules[f"sigmoid_{point}{u}"] = sig
        m.d.comb += [sig.i.eq(pre), sig.v.eq(self._v(m, slot, rowset, 1 + RQ_LATENCY))]
        return sig.o

    def _lane_after(self, m, u):
        """reset_after unit lane u: r, z, then n with r and z of its own unit; return the
        'last unit of a layer written' flag."""
        cfg = self.config
        spec, lat = cfg.spec, self.latencies
        nl, ml, fx, fh = self.nl, self.ml, self.fx, self.fh
        tm = cfg.profile.tail_mul
        t = self.beat
        sr, sz, sn = 3 * u, 3 * u + 1, 3 * u + 2
        L_rz = lat.rz
        assert 1 + RQ_LATENCY + PWLUnit.latency_of(tm) == L_rz
        gates = {}
        for point, slot in (("r", sr), ("z", sz)):
            g = self._gate(m, u, slot, point, "all")
            v = self._v(m, slot, "all", L_rz)
            held = Signal.like(g, name=f"{point}_held{u}")
            with m.If(v):
                m.d.sync += held.eq(g)
            use = Signal.like(g, name=f"{point}_use{u}")
            m.d.comb += use.eq(Mux(v, g, held))  # this beat's, or the partial beat's before
            gates[point] = use
        hn = self._rq_layers(m, t.ah[sn], fh, lambda k: spec.layers[k].hn_fmt, "hn",
                             self._tag(m, "layer", RQ_LATENCY), f"rq_hn{u}")
        dl = delay_ram if cfg.profile.ram_delays else delay
        hn_d = dl(m, hn, L_rz - RQ_LATENCY, f"hn{u}")
        ax_d = dl(m, t.ax[sn], L_rz + ml, f"ax_n{u}")
        rhn = mul_pipe(m, gates["r"], hn_d, tm, f"rhn_mul{u}", self._v(m, sn, "all", L_rz))
        fp = [spec.gate_fmt.frac_bits + spec.layers[k].hn_fmt.frac_bits for k in range(nl)]
        s_n, f_n = self._align_sum(m, self._tag(m, "layer", L_rz + ml), ax_d, fx, rhn, fp,
                                   f"s_n{u}")
        return self._update(m, u, sn, "all", s_n, f_n, L_rz + ml + 1, z=(gates["z"], L_rz))

    def _lane_before(self, m, u):
        """reset_before unit lane u: r * h and z written (rowset "rz"), then n and the update
        (rowset "n"); return the 'last z' and 'last unit' flags of a layer."""
        cfg = self.config
        spec, lat = cfg.spec, self.latencies
        nl, ml = self.nl, self.ml
        tm = cfg.profile.tail_mul
        t = self.beat
        sr, sz, sn = 2 * u, 2 * u + 1, u
        g_r = self._gate(m, u, sr, "r", "rz")
        g_z = self._gate(m, u, sz, "z", "rz")
        g_stage = 1 + RQ_LATENCY + PWLUnit.latency_of(tm)
        L_rz = lat.rz
        # r * h: h_j read one cycle before the gate comes out
        layer_r, stream_r = self._tag(m, "layer", g_stage - 1), self._stream(m, g_stage - 1)
        cur_r, zero_r = Signal(name=f"cur_r{u}"), Signal(name=f"zero_r{u}")
        m.d.comb += [cur_r.eq(self._bit(self.cur, layer_r, stream_r)),
                     zero_r.eq(self._bit(self.zero_cur, layer_r, stream_r))]
        m.d.comb += self.rh_h_rd[u].addr.eq(
            self._h_addr(m, layer_r, self._tag(m, "beat", g_stage - 1), cur_r, f"r{u}",
                         stream_r))
        h_r = Signal(signed(spec.h_fmt.width), name=f"h_r{u}")
        m.d.comb += h_r.eq(Mux(delay(m, zero_r, 1, f"zero_r{u}"), 0, self.rh_h_rd[u].data))
        fg, fhh = spec.gate_fmt.frac_bits, spec.h_fmt.frac_bits
        rh_prod = mul_pipe(m, g_r, h_r, tm, f"rh_mul{u}", self._v(m, sr, "rz", g_stage))
        layer_w, beat_w = self._tag(m, "layer", L_rz), self._tag(m, "beat", L_rz)
        rh = self._rq_layers(m, rh_prod, [fg + fhh] * nl, lambda k: spec.h_fmt, "rh", layer_w,
                             f"rq_rh{u}")
        gaddr_w = Signal(self.geo.ga + self.geo.sb, name=f"gaddr_w{u}")
        m.d.comb += gaddr_w.eq(self._gate_addr(m, layer_w, beat_w, f"w{u}",
                                               self._stream(m, L_rz)))
        v_z = self._v(m, sz, "rz", L_rz)
        m.d.comb += [self.rh_wr[u].addr.eq(gaddr_w), self.rh_wr[u].data.eq(rh),
                     self.rh_wr[u].en.eq(self._v(m, sr, "rz", L_rz)),
                     self.z_wr[u].addr.eq(gaddr_w),
                     self.z_wr[u].data.eq(delay(m, g_z, ml + RQ_LATENCY, f"z_w{u}")),
                     self.z_wr[u].en.eq(v_z)]
        rz_last = v_z & self._last(m, u, layer_w, beat_w, f"rz_last{u}")
        s_n, f_n = self._align_sum(m, t.layer, t.ax[sn], self.fx, t.ah[sn], self.fh, f"s_n{u}")
        return rz_last, self._update(m, u, sn, "n", s_n, f_n, 1, z=None)

    def _update(self, m, u, slot, rowset, s_n, f_n, n_in_stage, z):
        """tanh, then h' = requant(n + z (h - n)) written to way u of the layer's other bank.

        ``z``: (the unit's z, the stage it is valid at) or None (read from the z memory).
        Return the 'last unit of a layer written' flag.
        """
        cfg = self.config
        spec, lat = cfg.spec, self.latencies
        hs, nl, top = self.hs, self.nl, self.nl - 1
        tm, ml = cfg.profile.tail_mul, self.ml
        fg, fhh = spec.gate_fmt.frac_bits, spec.h_fmt.frac_bits
        pre_n = self._rq_layers(m, s_n, f_n, lambda k: spec.preact_fmt, "n",
                                self._tag(m, "layer", n_in_stage + RQ_LATENCY), f"rq_n{u}")
        tnh = PWLUnit(spec.tanh_table(), tm)
        m.submodules[f"tanh{u}"] = tnh
        m.d.comb += [tnh.i.eq(pre_n), tnh.v.eq(self._v(m, slot, rowset, n_in_stage + RQ_LATENCY))]
        us = n_in_stage + RQ_LATENCY + tnh.latency  # n valid at us
        n_val = tnh.o
        # z_j (reset_before) and h_j read one cycle before n comes out
        layer_u, beat_u = self._tag(m, "layer", us - 1), self._tag(m, "beat", us - 1)
        stream_u = self._stream(m, us - 1)
        cur_u, zero_u = Signal(name=f"cur_u{u}"), Signal(name=f"zero_u{u}")
        m.d.comb += [cur_u.eq(self._bit(self.cur, layer_u, stream_u)),
                     zero_u.eq(self._bit(self.zero_cur, layer_u, stream_u))]
        m.d.comb += self.upd_rd[u].addr.eq(self._h_addr(m, layer_u, beat_u, cur_u, f"u{u}",
                                                        stream_u))
        if z is None:
            m.d.comb += self.z_rd[u].addr.eq(self._gate_addr(m, layer_u, beat_u, f"u{u}",
                                                             stream_u))
            z1 = delay(m, self.z_rd[u].data, 1, f"z_upd{u}")
        else:
            z1 = delay(m, z[0], us + 1 - z[1], f"z_upd{u}")
        h_old = Signal(signed(spec.h_fmt.width), name=f"h_old{u}")
        m.d.comb += h_old.eq(Mux(delay(m, zero_u, 1, f"zero_u{u}"), 0, self.upd_rd[u].data))
        diff = Signal(signed(spec.h_fmt.width + 1), name=f"diff{u}")
        m.d.sync += diff.eq(h_old - n_val)
        n1 = delay(m, n_val, 1, f"n_upd{u}")
        zprod = mul_pipe(m, z1, diff, tm, f"z_mul{u}", self._v(m, slot, rowset, us + 1))
        n2 = delay(m, n1, ml, f"n_upd2_{u}")
        upd = Signal(signed(max(spec.h_fmt.width + fg, zprod.shape().width) + 1),
                     name=f"upd{u}")
        m.d.sync += upd.eq((n2 << fg) + zprod)
        L_n = lat.n
        assert us + 2 + ml + RQ_LATENCY == L_n, (us, L_n)
        layer_n, beat_n = self._tag(m, "layer", L_n), self._tag(m, "beat", L_n)
        h_new = self._rq_layers(m, upd, [fhh + fg] * nl, lambda k: spec.h_fmt, "h", layer_n,
                                f"rq_h{u}")
        wr_n = self._v(m, slot, rowset, L_n)
        stream_n = self._stream(m, L_n)
        cur_n = Signal(name=f"cur_n{u}")
        m.d.comb += cur_n.eq(self._bit(self.cur, layer_n, stream_n))
        m.d.comb += [self.st_wr[u].addr.eq(self._h_addr(m, layer_n, beat_n, ~cur_n, f"n{u}",
                                                        stream_n)),
                     self.st_wr[u].data.eq(h_new), self.st_wr[u].en.eq(wr_n)]
        if cfg.sequence or cfg.qm.head_w is None:
            oen = self.top_oen if cfg.streams == 1 else self.top_oen.bit_select(stream_n, 1)
            with m.If(wr_n & (layer_n == top) & oen):
                with m.Switch(beat_n):
                    for j in range(u, hs[top], self.u):
                        with m.Case(j // self.u):
                            m.d.sync += self.y[j].eq(h_new)
        return wr_n & self._last(m, u, layer_n, beat_n, f"n_last{u}")

    def _head(self, m):
        """Head beats: requantize each slot's sum into the output register."""
        cfg = self.config
        spec, qm = cfg.spec, cfg.qm
        if qm.head_w is None:
            m.d.comb += self.head_done.eq(Const(0))
            return
        md = spec.mode("head")
        K = self.k
        beat_h = self._tag(m, "beat", RQ_LATENCY)
        targets = self.y_head if cfg.sequence else self.y
        ys, vs = [], []
        for i in range(min(K, qm.output_size)):
            ys.append(rq_pipe(m, self.beat.ah[i], spec.h_fmt.frac_bits + spec.head.w_fmt.frac_bits,
                              spec.head.out_fmt, md.rounding, md.overflow, f"rq_head{i}"))
            vs.append(self._v(m, i, "head", RQ_LATENCY))
        for j in range(qm.output_size):
            with m.If(vs[j % K] & (beat_h == j // K)):
                m.d.sync += targets[j].eq(ys[j % K])
        last = qm.output_size - 1
        m.d.comb += self.head_done.eq(vs[last % K] & (beat_h == last // K))


def _any(flags):
    """Return the OR of a list of 1-bit values."""
    out = flags[0]
    for f in flags[1:]:
        out = out | f
    return out
