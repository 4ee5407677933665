"""Modules: quantized linear layers and the model transform that installs them.

>>> infercore.quantize_model(model, "int4", group_size=128)  # swaps nn.Linear in place
"""

from infercore.nn.linear import LINEAR_METHODS, QuantizedLinear
from infercore.nn.quantize import quantize_model

__all__ = ["LINEAR_METHODS", "QuantizedLinear", "quantize_model"]
