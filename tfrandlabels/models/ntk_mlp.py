"""The toy networks of Zavatone-Veth et al. (2023): MLPs in the NTK parameterization.

Every weight and bias is drawn from N(0, init_scale^2), with no fan-in scaling at
initialization; instead every layer after the first divides its affine output by the
square root of its fan-in, so the outputs stay O(1) as the width grows:

  h_1 = act(W_1 x + b_1),   h_l = act((W_l h_{l-1} + b_l) / sqrt(n_{l-1})),
  logits = (W_out h_L + b_out) / sqrt(n_L).

This is the reference code's `MLPSingle` (one hidden layer) and `MLPMultiple`
(Pehlevan-Group/nn_curvature). Layer l's feature map is the output of `act{l}`; the
last one is the input of `logits`, the model's last Dense layer. The whole network,
logits included, computes in `dtype` (float64 by default, as the reference does; only
Keras's Rescaling keeps its factor in float32, exact to 1e-8, a constant scale): the
volume element of a trained net spans orders of magnitude, and the trainer casts the
logits to float32 for the loss anyway.

The LayerFactory's He initialization is not used (the parameterization is the point);
its `init_scale` is the weights' standard deviation and its `seed` seeds layer i's
weights with seed + 2i and its biases with seed + 2i + 1.
"""
import math
from collections.abc import Sequence

import keras

from tfrandlabels.models.registry import LayerFactory, check_choice, check_positive_int, register

ACTIVATIONS = ("sigmoid", "tanh", "relu")
DTYPES = ("float32", "float64")


def _dense(units, name, layers, index, dtype):
  """A Dense layer with N(0, init_scale^2) weights and biases; the index-th one built."""
  def normal(offset):
    seed = None if layers.seed is None else layers.seed + 2 * index + offset
    return keras.initializers.RandomNormal(stddev=layers.init_scale, seed=seed)
  return keras.layers.Dense(units, kernel_initializer=normal(0), bias_initializer=normal(1),
                            dtype=dtype, name=name)


@register("ntk_mlp")
def ntk_mlp(num_classes: int, input_shape: tuple[int, ...], layers: LayerFactory, *,
            widths: Sequence[int] = (250,), activation: str = "sigmoid",
            dtype: str = "float64") -> keras.Model:
  """Builds dense1 -> act1 -> dense2 -> scale2 -> act2 ... -> logits -> logits_scale.

  Args:
    num_classes: number of logits.
    input_shape: shape of one example, a vector (e.g. (2,) for the toy tasks).
    layers: the LayerFactory whose init_scale and seed the weights use.
    widths: units of the hidden layers, first to last (at least one).
    activation: the hidden layers' nonlinearity, one of ACTIVATIONS.
    dtype: the dtype every layer computes and stores its weights in, one of DTYPES.

  Returns:
    A functional model with weight layers `dense1` .. `dense{L}`, `logits`, and feature
    maps `act1` .. `act{L}`.
  """
  if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths:
    raise ValueError(f"widths={widths!r} must be a non-empty sequence of ints >= 1, e.g. (250,).")
  for width in widths:
    check_positive_int("widths", width)
  check_choice("activation", activation, ACTIVATIONS)
  check_choice("dtype", dtype, DTYPES)
  if len(input_shape) != 1:
    raise ValueError(f"input_shape={input_shape!r} must be a vector shape (d,) for ntk_mlp.")
  inputs = keras.Input(shape=input_shape, dtype=dtype, name="image")
  x, fan_in = inputs, None
  for index, width in enumerate(widths):
    name = index + 1
    x = _dense(width, f"dense{name}", layers, index, dtype)(x)
    if fan_in is not None:
      x = keras.layers.Rescaling(1 / math.sqrt(fan_in), dtype=dtype, name=f"scale{name}")(x)
    x = keras.layers.Activation(activation, dtype=dtype, name=f"act{name}")(x)
    fan_in = width
  logits = _dense(num_classes, "logits", layers, len(widths), dtype)(x)
  logits = keras.layers.Rescaling(1 / math.sqrt(fan_in), dtype=dtype, name="logits_scale")(logits)
  return keras.Model(inputs, logits, name="ntk_mlp")
