"""The nonlinear tail: gate sums -> requantizers -> PWL sigmoid/tanh -> products -> new h."""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out

from .activation import PWLUnit
from .arith import MUL_LATENCY, RQ_LATENCY, SEQ_STEPS, delay, delay_ram, mul_pipe, rq_pipe
from .chain import KIND_HEAD, KIND_N, KIND_R, KIND_Z, row_layout

__all__ = ["Tail", "TailLatency", "TailHelpers"]


class TailLatency:
    """The tail's latencies for a profile and variant, from its parts' declared latencies."""

    def __init__(self, profile, reset_after: bool) -> None:
        ml = MUL_LATENCY[profile.tail_mul]
        #: a PWL unit, input to output
        self.pwl = PWLUnit.latency_of(profile.tail_mul)
        #: n to h' = requant(n + z (h - n)): difference, product, sum, requantizer
        self.update = 2 + ml + RQ_LATENCY
        #: an r/z row entering the tail to its gate (reset_before: r*h) being written
        self.rz = 1 + RQ_LATENCY + self.pwl + (0 if reset_after else ml + RQ_LATENCY)
        #: an n row entering the tail to the new h being written (reset_after: waits for r,
        #: then r*hn, align+sum, requantizer, tanh, update)
        self.n = ((self.rz + ml + 1) if reset_after else 1) + RQ_LATENCY + self.pwl + self.update
        #: a head row entering the tail to its output being written
        self.head = RQ_LATENCY


def _mem_in(aw: int, width: int):
    """A memory read port as seen by its user."""
    return In(ReadPort.Signature(addr_width=aw, shape=signed(width)))


def _mem_out(aw: int, width: int):
    """A memory write port as seen by its user."""
    return In(WritePort.Signature(addr_width=aw, shape=signed(width)))


class TailHelpers:
    """Helpers over the layers shared by the tails (each layer has its own formats and modes).

    Needs ``self.config``.
    """

    def _bit(self, sig, layer, stream):
        """The bit of ``layer`` (and with S > 1 streams, of ``stream``) of a per-layer status
        signal (``cur``, ``zero_cur``: stream s's layer k at bit ``s * L + k``)."""
        if self.config.streams == 1:
            return sig.bit_select(layer, 1)
        return sig.bit_select(stream * len(self.config.qm.hidden_sizes) + layer, 1)

    def _sel(self, m, index, vals, name):
        """Return a signal equal to the constant ``vals[index]``."""
        out = Signal(range(max(max(vals), 1) + 1), name=name)
        if len(vals) == 1:
            m.d.comb += out.eq(vals[0])
            return out
        with m.Switch(index):
            for i, v in enumerate(vals):
                with m.Case(i):
                    m.d.comb += out.eq(v)
        return out

    def _rq_layers(self, m, v, fracs, fmt_of, point, layer_after, name):
        """Requantize ``v`` per layer (own frac / format / mode), select by the layer."""
        spec = self.config.spec
        nl = len(fracs)
        outs = []
        for k in range(nl):
            md = spec.mode(f"l{k}.{point}")
            outs.append(rq_pipe(m, v, fracs[k], fmt_of(k), md.rounding, md.overflow,
                                f"{name}{k}"))
        if nl == 1:
            return outs[0]
        res = Signal(signed(max(o.shape().width for o in outs)), name=f"{name}_sel")
        with m.Switch(layer_after):
            for k in range(nl):
                with m.Case(k):
                    m.d.comb += res.eq(outs[k])
        return res

    def _align_sum(self, m, layer_sig, a, fa, b, fb, name):
        """Register sum_k (a << (f - fa_k)) + (b << (f - fb_k)) with f = max; return (sig, f)."""
        nl = len(fa)
        fm = [max(fa[k], fb[k]) for k in range(nl)]
        exprs = [(a << (fm[k] - fa[k])) + (b << (fm[k] - fb[k])) for k in range(nl)]
        s = Signal(signed(max(e.shape().width for e in exprs)), name=name)
        if nl == 1:
            m.d.sync += s.eq(exprs[0])
        else:
            with m.Switch(layer_sig):
                for k in range(nl):
                    with m.Case(k):
                        m.d.sync += s.eq(exprs[k])
        return s, fm


class Tail(TailHelpers, wiring.Component):
    """Turns emitted gate rows into gates, the new hidden state and the head's outputs.

    Ports:
      * ``row`` (in, :func:`gru_hw.gateware.chain.row_layout`): one emitted row per
        :meth:`interval_of` cycles at most.
      * memory ports of :class:`gru_hw.gateware.state.StateMemories` (flipped): ``upd_rd``,
        ``st_wr``, ``z_wr``, ``z_rd``, and ``r_wr``/``r_rd`` (reset_after) or
        ``rh_h_rd``/``rh_wr`` (reset_before).
      * ``cur``, ``zero_cur`` (in, one bit per layer): the bank holding each layer's current h,
        and whether the layer's step starts from h = 0; ``top_oen`` (in): the top layer's h of
        this step goes to the output register. With S > 1 streams one bit per stream and layer
        (``s * L + k``) and per stream; a row's ``stream`` picks its state copy and bits, and
        ``n_stream`` / ``rz_stream`` (out) name the completions' stream.
      * ``n_done``/``n_layer`` (out): the last unit of a layer's new h is written this cycle;
        ``rz_done``/``rz_layer`` (reset_before): the last z of a layer is written;
        ``head_done``: the last head output is written.
      * ``y`` (out): the output register's values (h of the top layer or the head's outputs);
        ``y_head`` (sequence mode with a head): the head's outputs.

    Latency (row in to result written): :class:`TailLatency` ``rz``, ``n``, ``head``.
    Throughput: one row per cycle, or one per SEQ_STEPS cycles with the "seq" multipliers.
    """

    def __init__(self, config) -> None:
        self.config = config
        spec, qm = config.spec, config.qm
        hs = list(qm.hidden_sizes)
        nl = len(hs)
        self.latencies = TailLatency(config.profile, qm.reset_after)
        self.hs, self.nl = hs, nl
        self.ml = MUL_LATENCY[config.profile.tail_mul]
        #: accumulator fraction bits of the input and recurrent parts, per layer
        self.fx = [spec.acc_x_frac(k) for k in range(nl)]
        self.fh = [spec.acc_h_frac(k) for k in range(nl)]
        from .state import StateGeometry

        self.geo = geo = StateGeometry(config)
        sa, ga = geo.sa + geo.sb, geo.ga + geo.sb
        ns = config.streams
        h_w, g_w = spec.h_fmt.width, spec.gate_fmt.width
        if config.sequence:
            self.out_width, self.y_size = h_w, hs[-1]
        else:
            self.out_width, self.y_size = spec.out_fmt.width, qm.output_size
        members = {
            "row": In(row_layout(config)),
            "upd_rd": _mem_in(sa, h_w), "st_wr": _mem_out(sa, h_w),
            "z_wr": _mem_out(ga, g_w), "z_rd": _mem_in(ga, g_w),
            "cur": In(ns * nl), "zero_cur": In(ns * nl), "top_oen": In(ns),
            "n_done": Out(1), "n_layer": Out(range(max(nl, 2))),
            "rz_done": Out(1), "rz_layer": Out(range(max(nl, 2))), "head_done": Out(1),
            "y": Out(data.ArrayLayout(signed(self.out_width), self.y_size)),
        }
        if ns > 1:
            members.update(n_stream=Out(range(ns)), rz_stream=Out(range(ns)))
        if qm.reset_after:
            members.update(r_wr=_mem_out(ga, g_w), r_rd=_mem_in(ga, g_w))
        else:
            members.update(rh_h_rd=_mem_in(sa, h_w), rh_wr=_mem_out(ga, h_w))
        if config.sequence and qm.head_w is not None:
            members["y_head"] = Out(data.ArrayLayout(signed(spec.out_fmt.width),
                                                     qm.output_size))
        super().__init__(members)

    @staticmethod
    def interval_of(profile) -> int:
        """Cycles between two emitted rows the tail can take (1, or SEQ_STEPS with "seq")."""
        return SEQ_STEPS if profile.tail_mul == "seq" else 1

    def _at(self, m, sig, n, name):
        return delay(m, sig, n, name)

    def _layer_at(self, m, n):
        return self._at(m, self.row.layer, n, "t_layer") if n else self.row.layer

    def _stream_at(self, m, n):
        """The row's stream ``n`` cycles after it entered (Const 0 with one stream)."""
        if self.config.streams == 1:
            return Const(0, 1)
        return self._at(m, self.row.stream, n, "t_stream") if n else self.row.stream

    def _h_addr(self, m, layer, j, bank_sel, name, stream):
        """State address of unit j of ``layer``: bank ``bank_sel`` (1: the upper bank), in
        ``stream``'s copy."""
        hs = list(self.config.qm.hidden_sizes)
        sbase = [2 * sum(hs[:k]) for k in range(len(hs))]
        row = (self._sel(m, layer, sbase, f"sbase_{name}") +
               Mux(bank_sel, self._sel(m, layer, hs, f"hs_{name}"), 0) + j)
        return self.geo.addr(row, stream, self.geo.sa)

    def _gate_addr(self, m, layer, j, name, stream):
        hs = list(self.config.qm.hidden_sizes)
        row = self._sel(m, layer, [sum(hs[:k]) for k in range(len(hs))], f"gbase_{name}") + j
        return self.geo.addr(row, stream, self.geo.ga)

    # ---- the datapath ----------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        gate = self._rz_rows(m)
        s_n, f_n, n_in_stage = self._n_sum(m, gate)
        self._update(m, s_n, f_n, n_in_stage)
        self._head(m)
        return m

    def _rz_rows(self, m):
        """r / z rows: sum, requantize (point r or z), sigmoid, write (reset_before: r * h)."""
        cfg = self.config
        spec, lat = cfg.spec, self.latencies
        hs, nl, ml, fx, fh = self.hs, self.nl, self.ml, self.fx, self.fh
        tm = cfg.profile.tail_mul
        t = self.row
        s_rz, f_rz = self._align_sum(m, t.layer, t.ax, fx, t.ah, fh, "s_rz")
        kind3 = self._at(m, self._at(m, t.kind, 1, "kind"), RQ_LATENCY, "kind1")
        layer3 = self._layer_at(m, RQ_LATENCY + 1)
        pre_r = self._rq_layers(m, s_rz, f_rz, lambda k: spec.preact_fmt, "r", layer3, "rq_r")
        pre_z = self._rq_layers(m, s_rz, f_rz, lambda k: spec.preact_fmt, "z", layer3, "rq_z")
        pre_g = Signal(signed(spec.preact_fmt.width), name="pre_g")
        m.d.comb += pre_g.eq(Mux(kind3 == KIND_Z, pre_z, pre_r))
        m.submodules.sigmoid = sig = PWLUnit(spec.sigmoid_table(), tm)
        m.d.comb += [sig.i.eq(pre_g), sig.v.eq(self._at(m, t.valid, 1 + RQ_LATENCY, "v_sig"))]
        g_stage = 1 + RQ_LATENCY + sig.latency  # gate value valid at g_stage
        gate = sig.o
        L_rz = lat.rz
        v_w = self._at(m, t.valid, L_rz, "v_rz")
        kind_w = self._at(m, t.kind, L_rz, "kind_rz")
        j_w = self._at(m, t.j, L_rz, "j_rz")
        layer_w = self._layer_at(m, L_rz)
        stream_w = self._stream_at(m, L_rz)
        gaddr_w = Signal(self.geo.ga + self.geo.sb, name="gaddr_w")
        m.d.comb += gaddr_w.eq(self._gate_addr(m, layer_w, j_w, "w", stream_w))
        if cfg.qm.reset_after:
            assert g_stage == L_rz
            m.d.comb += [self.r_wr.addr.eq(gaddr_w), self.r_wr.data.eq(gate),
                         self.r_wr.en.eq(v_w & (kind_w == KIND_R)),
                         self.z_wr.addr.eq(gaddr_w), self.z_wr.data.eq(gate),
                         self.z_wr.en.eq(v_w & (kind_w == KIND_Z))]
            return gate
        # r*h: read h_j one cycle before the gate comes out
        j_r = self._at(m, t.j, g_stage - 1, "j_hr")
        layer_r = self._layer_at(m, g_stage - 1)
        stream_r = self._stream_at(m, g_stage - 1)
        cur_r, zero_r = Signal(name="cur_r"), Signal(name="zero_r")
        m.d.comb += [cur_r.eq(self._bit(self.cur, layer_r, stream_r)),
                     zero_r.eq(self._bit(self.zero_cur, layer_r, stream_r))]
        m.d.comb += self.rh_h_rd.addr.eq(self._h_addr(m, layer_r, j_r, cur_r, "r", stream_r))
        zero_r1 = self._at(m, zero_r, 1, "zero_r")
        h_r = Signal(signed(spec.h_fmt.width), name="h_r")
        m.d.comb += h_r.eq(Mux(zero_r1, 0, self.rh_h_rd.data))
        fg, fhh = spec.gate_fmt.frac_bits, spec.h_fmt.frac_bits
        rh_prod = mul_pipe(m, gate, h_r, tm, "rh_mul", self._at(m, t.valid, g_stage, "v_rhm"))
        rh = self._rq_layers(m, rh_prod, [fg + fhh] * nl, lambda k: spec.h_fmt, "rh",
                             self._layer_at(m, L_rz), "rq_rh")
        gate_w = self._at(m, gate, ml + RQ_LATENCY, "gate_w")
        m.d.comb += [self.rh_wr.addr.eq(gaddr_w), self.rh_wr.data.eq(rh),
                     self.rh_wr.en.eq(v_w & (kind_w == KIND_R)),
                     self.z_wr.addr.eq(gaddr_w), self.z_wr.data.eq(gate_w),
                     self.z_wr.en.eq(v_w & (kind_w == KIND_Z))]
        # the reset_before r/z pass is done when z of the last unit is written
        last_w = j_w == self._sel(m, layer_w, [h - 1 for h in hs], "hlast_rz")
        m.d.comb += [self.rz_done.eq(v_w & (kind_w == KIND_Z) & last_w),
                     self.rz_layer.eq(layer_w)]
        if cfg.streams > 1:
            m.d.comb += self.rz_stream.eq(stream_w)
        return gate

    def _n_sum(self, m, gate):
        """n rows up to the tanh input: return (sum, its fraction bits per layer, its stage)."""
        cfg = self.config
        spec, lat = cfg.spec, self.latencies
        nl, ml, fx, fh = self.nl, self.ml, self.fx, self.fh
        tm = cfg.profile.tail_mul
        t = self.row
        if not cfg.qm.reset_after:
            s_n, f_n = self._align_sum(m, t.layer, t.ax, fx, t.ah, fh, "s_n")
            return s_n, f_n, 1
        L_rz = lat.rz
        hn = self._rq_layers(m, t.ah, fh, lambda k: spec.layers[k].hn_fmt, "hn",
                             self._layer_at(m, RQ_LATENCY), "rq_hn")
        # long wide delays (waiting for r): memory delay lines with the profile's ram_delays
        # (iCE40: a register chain costs one logic cell per bit and stage)
        dl = delay_ram if cfg.profile.ram_delays else delay
        hn_d = dl(m, hn, L_rz - RQ_LATENCY, "hn")
        ax_d = dl(m, t.ax, L_rz + ml, "ax_n")
        j_rr = self._at(m, t.j, L_rz - 1, "j_rr")
        layer_rr = self._layer_at(m, L_rz - 1)
        m.d.comb += self.r_rd.addr.eq(self._gate_addr(m, layer_rr, j_rr, "rr",
                                                      self._stream_at(m, L_rz - 1)))
        rhn = mul_pipe(m, self.r_rd.data, hn_d, tm, "rhn_mul", self._at(m, t.valid, L_rz, "v_rhn"))
        fp = [spec.gate_fmt.frac_bits + spec.layers[k].hn_fmt.frac_bits for k in range(nl)]
        s_n, f_n = self._align_sum(m, self._layer_at(m, L_rz + ml), ax_d, fx, rhn, fp, "s_n")
        return s_n, f_n, L_rz + ml + 1

    def _update(self, m, s_n, f_n, n_in_stage):
        """tanh, then h' = requant(n + z (h - n)) written to the layer's other bank."""
        cfg = self.config
        spec, lat = cfg.spec, self.latencies
        hs = list(cfg.qm.hidden_sizes)
        nl, top = len(hs), len(hs) - 1
        tm = cfg.profile.tail_mul
        ml = MUL_LATENCY[tm]
        fg, fhh = spec.gate_fmt.frac_bits, spec.h_fmt.frac_bits
        t = self.row
        pre_n = self._rq_layers(m, s_n, f_n, lambda k: spec.preact_fmt, "n",
                                self._layer_at(m, n_in_stage + RQ_LATENCY), "rq_n")
        m.submodules.tanh = tnh = PWLUnit(spec.tanh_table(), tm)
        m.d.comb += [tnh.i.eq(pre_n),
                     tnh.v.eq(self._at(m, t.valid, n_in_stage + RQ_LATENCY, "v_tanh"))]
        u = n_in_stage + RQ_LATENCY + tnh.latency  # n valid at u
        n_val = tnh.o
        # z_j and h_j read one cycle before n comes out
        j_u = self._at(m, t.j, u - 1, "j_u")
        layer_u = self._layer_at(m, u - 1)
        stream_u = self._stream_at(m, u - 1)
        cur_u, zero_u = Signal(name="cur_u"), Signal(name="zero_u")
        m.d.comb += [cur_u.eq(self._bit(self.cur, layer_u, stream_u)),
                     zero_u.eq(self._bit(self.zero_cur, layer_u, stream_u))]
        m.d.comb += [self.z_rd.addr.eq(self._gate_addr(m, layer_u, j_u, "u", stream_u)),
                     self.upd_rd.addr.eq(self._h_addr(m, layer_u, j_u, cur_u, "u", stream_u))]
        zero_u1 = self._at(m, zero_u, 1, "zero_u")
        h_old = Signal(signed(spec.h_fmt.width), name="h_old")
        m.d.comb += h_old.eq(Mux(zero_u1, 0, self.upd_rd.data))
        diff = Signal(signed(spec.h_fmt.width + 1), name="diff")
        m.d.sync += diff.eq(h_old - n_val)
        z1 = self._at(m, self.z_rd.data, 1, "z_upd")
        n1 = self._at(m, n_val, 1, "n_upd")
        zprod = mul_pipe(m, z1, diff, tm, "z_mul", self._at(m, t.valid, u + 1, "v_zm"))
        n2 = self._at(m, n1, ml, "n_upd2")
        upd = Signal(signed(max(spec.h_fmt.width + fg, zprod.shape().width) + 1), name="upd")
        m.d.sync += upd.eq((n2 << fg) + zprod)
        L_n = lat.n
        assert u + 2 + ml + RQ_LATENCY == L_n, (u, L_n)
        h_new = self._rq_layers(m, upd, [fhh + fg] * nl, lambda k: spec.h_fmt, "h",
                                self._layer_at(m, L_n), "rq_h")
        v_n = self._at(m, t.valid, L_n, "v_n")
        kind_n = self._at(m, t.kind, L_n, "kind_n")
        j_n = self._at(m, t.j, L_n, "j_n")
        layer_n = self._layer_at(m, L_n)
        stream_n = self._stream_at(m, L_n)
        cur_n = Signal(name="cur_n")
        m.d.comb += cur_n.eq(self._bit(self.cur, layer_n, stream_n))
        wr_n = v_n & (kind_n == KIND_N)
        m.d.comb += [self.st_wr.addr.eq(self._h_addr(m, layer_n, j_n, ~cur_n, "n", stream_n)),
                     self.st_wr.data.eq(h_new), self.st_wr.en.eq(wr_n)]
        last_n = j_n == self._sel(m, layer_n, [h - 1 for h in hs], "hlast_n")
        m.d.comb += [self.n_done.eq(wr_n & last_n), self.n_layer.eq(layer_n)]
        if cfg.streams > 1:
            m.d.comb += self.n_stream.eq(stream_n)
        if cfg.sequence or cfg.qm.head_w is None:
            oen = self.top_oen if cfg.streams == 1 else self.top_oen.bit_select(stream_n, 1)
            with m.If(wr_n & (layer_n == top) & oen):
                with m.Switch(j_n):
                    for j in range(hs[top]):
                        with m.Case(j):
                            m.d.sync += self.y[j].eq(h_new)

    def _head(self, m):
        """Head rows: requantize the sum into the output register."""
        cfg = self.config
        spec, qm = cfg.spec, cfg.qm
        if qm.head_w is None:
            m.d.comb += self.head_done.eq(Const(0))
            return
        md = spec.mode("head")
        t = self.row
        yh = rq_pipe(m, t.ah, spec.h_fmt.frac_bits + spec.head.w_fmt.frac_bits,
                     spec.head.out_fmt, md.rounding, md.overflow, "rq_head")
        v_h = self._at(m, t.valid, RQ_LATENCY, "v_head")
        kind_h = self._at(m, t.kind, RQ_LATENCY, "kind_head")
        j_h = self._at(m, t.j, RQ_LATENCY, "j_head")
        wr_h = v_h & (kind_h == KIND_HEAD)
        targets = self.y_head if cfg.sequence else self.y
        with m.If(wr_h):
            with m.Switch(j_h):
                for j in range(qm.output_size):
                    with m.Case(j):
                        m.d.sync += targets[j].eq(yh)
        m.d.comb += self.head_done.eq(wr_h & (j_h == qm.output_size - 1))
