"""Spiking neurons: surrogate gradients and the leaky integrate-and-fire layer over T steps."""

from .lif import LIFGrads, LIFTrace, lif_backward, lif_forward, lif_membrane
from .surrogate import (SURROGATES, Surrogate, pwl_grad, pwl_primitive, sigmoid_grad,
                        sigmoid_primitive)

__all__ = [
    "LIFGrads", "LIFTrace", "SURROGATES", "Surrogate", "lif_backward", "lif_forward",
    "lif_membrane", "pwl_grad", "pwl_primitive", "sigmoid_grad", "sigmoid_primitive",
]
