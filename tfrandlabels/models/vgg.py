"""VGG16 for CIFAR-sized inputs, as Maennel et al. (2020) use it.

The 13-layer conv stack of VGG16 with its five 2x2 max-pools, then, as in the
paper, no average pooling and no hidden fully connected layers: the flattened
conv features go straight into one linear classifier.
"""
import keras

from tfrandlabels.models.registry import LayerFactory, check_positive_int, image_input, register

# Output channels of each 3x3 conv; "M" is a 2x2 max-pool with stride 2.
VGG16_STACK = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
               512, 512, 512, "M", 512, 512, 512, "M")
_NUM_POOLS = VGG16_STACK.count("M")


@register("vgg16")
def vgg16(num_classes: int, input_shape: tuple[int, ...], layers: LayerFactory, *,
          batch_norm: bool = False, width_divisor: int = 1) -> keras.Model:
  """Builds conv1 .. conv13 (with pools) -> flatten -> logits.

  Args:
    num_classes: number of logits.
    input_shape: (height, width, channels), each side >= 32 so that five pools fit.
    layers: the LayerFactory that initializes the weight layers.
    batch_norm: insert BatchNormalization between each conv and its ReLU (the
      conv then has no bias, which BN would cancel).
    width_divisor: every conv has 1/width_divisor of VGG16's channels (e.g. 8: 8 to 64
      channels), a small-scale VGG16 with the same depth, for CPUs.

  Returns:
    A functional model with weight layers `conv1` .. `conv13`, `logits`.
  """
  if not isinstance(batch_norm, bool):
    raise ValueError(f"batch_norm={batch_norm!r} must be True or False.")
  check_positive_int("width_divisor", width_divisor)
  image = image_input(input_shape, min_side=2**_NUM_POOLS)
  x = image
  conv_index, pool_index = 0, 0
  for entry in VGG16_STACK:
    if entry == "M":
      pool_index += 1
      x = keras.layers.MaxPooling2D(2, name=f"pool{pool_index}")(x)
      continue
    conv_index += 1
    x = layers.conv2d(max(entry // width_divisor, 1), 3, f"conv{conv_index}",
                      use_bias=not batch_norm)(x)
    if batch_norm:
      x = keras.layers.BatchNormalization(name=f"bn{conv_index}")(x)
    x = keras.layers.ReLU(name=f"relu{conv_index}")(x)
  x = keras.layers.Flatten(name="flatten")(x)
  return keras.Model(image, layers.logits(num_classes)(x), name="vgg16")
