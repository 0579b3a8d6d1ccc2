"""A multilayer perceptron on flattened inputs (Maennel et al. use 256/256 and 2048/256)."""
from collections.abc import Sequence

import keras

from tfrandlabels.models.registry import LayerFactory, check_positive_int, register


@register("mlp")
def mlp(num_classes: int, input_shape: tuple[int, ...], layers: LayerFactory, *,
        widths: Sequence[int] = (256, 256)) -> keras.Model:
  """Builds flatten -> dense1 .. denseN (ReLU) -> logits.

  Args:
    num_classes: number of logits.
    input_shape: shape of one example; any rank, it is flattened.
    layers: the LayerFactory that initializes the weight layers.
    widths: units of the hidden layers, first to last; empty gives a linear classifier.

  Returns:
    A functional model with weight layers `dense1` .. `dense{len(widths)}`, `logits`.
  """
  if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
    raise ValueError(f"widths={widths!r} must be a sequence of ints >= 1, e.g. (256, 256).")
  for width in widths:
    check_positive_int("widths", width)
  inputs = keras.Input(shape=input_shape, name="image")
  x = keras.layers.Flatten(name="flatten")(inputs)
  for i, width in enumerate(widths, start=1):
    x = layers.dense(width, f"dense{i}", activation="relu")(x)
  return keras.Model(inputs, layers.logits(num_classes)(x), name="mlp")
