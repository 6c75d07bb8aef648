"""Amaranth gateware of the GRU core (see :mod:`gru_hw.gateware.top` for the architecture)."""

from .activation import PWLUnit
from .arith import Requantizer, TailMultiplier
from .top import GRUCore

__all__ = ["GRUCore", "PWLUnit", "Requantizer", "TailMultiplier"]
