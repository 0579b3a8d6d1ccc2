"""A small, fast network for frequency-shortcut studies on 32x32 images.

Two strided convolutions with ReLU, global average pooling, a linear classifier. The
first layer's 5x5 filters see every frequency of the image at full resolution (its
stride only subsamples their responses), and averaging the rectified responses
measures how much of each filter's band an image holds, whatever its phase: the
shape of the cue the planted-band data sets (`tfrandlabels.data.planted`) carry.
About 1.2 MFLOP per 32x32x3 image, so a dominant-frequency search over every
frequency stays cheap on a CPU.
"""
from collections.abc import Sequence

import keras

from tfrandlabels.models.registry import LayerFactory, check_positive_int, image_input, register


@register("strided_cnn")
def strided_cnn(num_classes: int, input_shape: tuple[int, ...], layers: LayerFactory, *,
                widths: Sequence[int] = (16, 32), kernel_sizes: Sequence[int] = (5, 3)
                ) -> keras.Model:
  """Builds conv1 .. convN (stride 2, ReLU) -> global average pool -> logits.

  Args:
    num_classes: number of logits.
    input_shape: (height, width, channels).
    layers: the LayerFactory that initializes the weight layers.
    widths: output channels of each convolution.
    kernel_sizes: kernel side of each convolution, one per width.

  Returns:
    A functional model with weight layers `conv1` .. `convN`, `logits`.
  """
  if not widths or len(widths) != len(kernel_sizes):
    raise ValueError(f"widths={list(widths)} and kernel_sizes={list(kernel_sizes)} must be "
                     "non-empty and of the same length.")
  for name, values in (("widths", widths), ("kernel_sizes", kernel_sizes)):
    for value in values:
      check_positive_int(name, value)
  image = image_input(input_shape)
  x = image
  for index, (width, size) in enumerate(zip(widths, kernel_sizes), start=1):
    x = layers.conv2d(width, size, f"conv{index}", strides=2, activation="relu")(x)
  x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
  return keras.Model(image, layers.logits(num_classes)(x), name="strided_cnn")
