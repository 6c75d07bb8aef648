"""gru-hw: fixed-point GRU inference hardware for FPGAs, generated from trained models."""

from .errors import GruHwError
from .model import DenseHead, GRULayer, GRUModel

__all__ = ["GruHwError", "GRUModel", "GRULayer", "DenseHead"]
__version__ = "0.1.0"
