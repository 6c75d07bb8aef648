"""Amaranth gateware of the GRU core (see :mod:`gru_hw.gateware.core` for the architecture)."""

from .activation import PWLUnit
from .arith import Requantizer, TailMultiplier
from .chain import ChainExit
from .chain_wide import WideChainExit
from .controller import Controller
from .core import GRUCore
from .mac import MACLanes
from .state import StateMemories
from .tail import Tail
from .tail_wide import UnitTail

__all__ = ["GRUCore", "Controller", "MACLanes", "ChainExit", "WideChainExit", "Tail", "UnitTail",
           "StateMemories", "PWLUnit", "Requantizer", "TailMultiplier"]
