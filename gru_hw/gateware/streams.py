"""The core's stream contract: one definition of each payload layout.

* input (``i_stream``): one time step per beat, ``{x: I x signed(x_width), first, last,
  [stream]}``; ``first`` restarts every layer (of the beat's stream) from h = 0, ``last`` ends a
  sequence; ``stream`` (cores with S > 1 streams) names the sequence's stream.
* output (``o_stream``): ``{y: O x signed(out_width), [y_head: O_head x signed(head_width)],
  last, [stream]}``.
* weights (``w_stream``, run-time weights only): ``{addr, data, last}``; a load is a packet
  ending with ``last``.

The cocotb bench does not restate these: it reads the bit positions from ``spec.json``'s
``ports``, which :func:`gru_hw.generate.port_layout` derives from the core's layouts.
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

__all__ = ["input_layout", "output_layout", "weight_layout"]


def input_layout(inputs: int, x_width: int, streams: int = 1) -> data.StructLayout:
    """Return the ``i_stream`` payload layout (``stream`` only when ``streams`` > 1)."""
    fields = {"x": data.ArrayLayout(signed(x_width), inputs),
              "first": unsigned(1), "last": unsigned(1)}
    if streams > 1:
        fields["stream"] = range(streams)
    return data.StructLayout(fields)


def output_layout(outputs: int, out_width: int, *, head_outputs: int | None = None,
                  head_width: int | None = None, streams: int = 1) -> data.StructLayout:
    """Return the ``o_stream`` payload layout (``y_head`` only when ``head_outputs`` is given,
    ``stream`` only when ``streams`` > 1)."""
    fields = {"y": data.ArrayLayout(signed(out_width), outputs)}
    if head_outputs is not None:
        fields["y_head"] = data.ArrayLayout(signed(head_width), head_outputs)
    fields["last"] = unsigned(1)
    if streams > 1:
        fields["stream"] = range(streams)
    return data.StructLayout(fields)


def weight_layout(addr_width: int, data_width: int) -> data.StructLayout:
    """Return the ``w_stream`` payload layout."""
    return data.StructLayout({"addr": unsigned(addr_width), "data": signed(data_width),
                              "last": unsigned(1)})
