"""The 2-layer convolutional network of Maennel et al. (2020), Figs. 4 and 5.

One valid-padded convolution with ReLU, flattened into one hidden dense layer
with ReLU, then a linear classifier. Its single conv layer is what the
alignment analysis reads: `conv1` sees image patches directly.
"""
import keras

from tfrandlabels.models.registry import LayerFactory, check_positive_int, image_input, register


@register("simple_cnn")
def simple_cnn(num_classes: int, input_shape: tuple[int, ...], layers: LayerFactory, *,
               filters: int = 256, hidden: int = 64, kernel_size: int = 3) -> keras.Model:
  """Builds conv1 -> flatten -> dense1 -> logits.

  Args:
    num_classes: number of logits.
    input_shape: (height, width, channels), each side >= `kernel_size`.
    layers: the LayerFactory that initializes the weight layers.
    filters: output channels of `conv1`.
    hidden: units of `dense1`.
    kernel_size: side of the square `conv1` kernel.

  Returns:
    A functional model with weight layers `conv1`, `dense1`, `logits`.
  """
  for name, value in (("filters", filters), ("hidden", hidden), ("kernel_size", kernel_size)):
    check_positive_int(name, value)
  image = image_input(input_shape, min_side=kernel_size)
  x = layers.conv2d(filters, kernel_size, "conv1", padding="valid", activation="relu")(image)
  x = keras.layers.Flatten(name="flatten")(x)
  x = layers.dense(hidden, "dense1", activation="relu")(x)
  return keras.Model(image, layers.logits(num_classes)(x), name="simple_cnn")
