"""Mayo's quantizers for Keras 3 (docs/quantization.md): Keras layers whose call is the quantized value with a
straight-through gradient and whose state lives in checkpoints, the reading of Mayo's `overrider:` specs, and
quantization-aware training of any Keras model (`quantize_model`, `strip_quantizers`)."""

from mayo_lite.errors import ArgumentError
from mayo_lite.quantize.base import Quantizer
from mayo_lite.quantize.composite import IncrementalQuantizer, MixedQuantizer, Recentralizer
from mayo_lite.quantize.fixed import (CourbariauxQuantizer, DGQuantizer, DGTrainableQuantizer, FixedPointQuantizer,
                                      LogQuantizer)
from mayo_lite.quantize.float import FloatingPointQuantizer, ShiftQuantizer
from mayo_lite.quantize.ternary import ChannelTernaryQuantizer, TernaryQuantizer

# The name of this room's argument error before the package had one; kept so that code catching it still does.
QuantizerArgumentError = ArgumentError

# Mayo's class names (`mayo.override.<name>`), in the order of its quantize/__init__.py.
QUANTIZERS = {cls.__name__: cls for cls in (
    FloatingPointQuantizer, ShiftQuantizer, FixedPointQuantizer, CourbariauxQuantizer, DGQuantizer,
    DGTrainableQuantizer, LogQuantizer, MixedQuantizer, Recentralizer, IncrementalQuantizer, TernaryQuantizer,
    ChannelTernaryQuantizer)}

from mayo_lite.quantize.models import (QuantizerUpdate, quantize_model, quantizer_layers,  # noqa: E402
                                       strip_quantizers, update_quantizers)

__all__ = [*QUANTIZERS, "QUANTIZERS", "Quantizer", "QuantizerArgumentError", "QuantizerUpdate", "quantize_model",
           "quantizer_layers", "strip_quantizers", "update_quantizers"]
