"""Hand-written ops, each a ``<op>_forward`` / ``<op>_backward`` pair."""

from .activation import (dropout_backward, dropout_forward, dropout_mask, flatten_backward,
                         flatten_forward, relu_backward, relu_forward, zero_units_of)
from .conv import Conv2dGrads, conv2d_backward, conv2d_forward, conv2d_output_size
from .linear import LinearGrads, linear_backward, linear_forward
from .loss import cross_entropy_backward, cross_entropy_forward, softmax
from .pool import avg_pool2d_backward, avg_pool2d_forward

__all__ = [
    "Conv2dGrads", "LinearGrads", "avg_pool2d_backward", "avg_pool2d_forward",
    "conv2d_backward", "conv2d_forward", "conv2d_output_size", "cross_entropy_backward",
    "cross_entropy_forward", "dropout_backward", "dropout_forward", "dropout_mask",
    "flatten_backward", "flatten_forward", "linear_backward", "linear_forward",
    "relu_backward", "relu_forward", "softmax", "zero_units_of",
]
