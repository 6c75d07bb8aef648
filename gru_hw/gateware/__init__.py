"""Amaranth gateware of the GRU core (see :mod:`gru_hw.gateware.core` for the architecture)."""

from .activation import PWLUnit
from .arith import Requantizer, TailMultiplier
from .chain import ChainExit
from .controller import Controller
from .core import GRUCore
from .mac import MACLanes
from .state import StateMemories
from .tail import Tail

__all__ = ["GRUCore", "Controller", "MACLanes", "ChainExit", "Tail", "StateMemories", "PWLUnit",
           "Requantizer", "TailMultiplier"]
