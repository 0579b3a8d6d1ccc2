"""Wide ResNet 28-4 (Zagoruyko & Komodakis, 2016), pre-activation.

A `first_kernel_size` stem conv with 16 channels, then three groups of four
pre-activation blocks (BN-ReLU-conv3x3-[dropout]-BN-ReLU-conv3x3) with widths
16k, 32k, 64k for widening factor k = 4 and strides 1, 2, 2, then BN-ReLU,
global average pooling and the logits. Maennel et al. (2020, Fig. 3) use a
5x5 first kernel.

Weight layers, in forward order: `conv1`, then per block
`block{group}_{block}_conv1`, where the width or resolution changes (the first
block of each group) `block{group}_{block}_shortcut`, a 1x1 projection of the
pre-activated block input, and `block{group}_{block}_conv2`; then `logits`.
Depth 28 = 6n + 4 with n = 4 blocks per group counts the convolutions as the
paper does: 1 stem conv + 24 block convs + 3 projection shortcuts = 28 conv
layers; with the logits that is 29 weight layers.
"""
import keras

from tfrandlabels.models.registry import LayerFactory, check_positive_int, image_input, register

STEM_WIDTH = 16
GROUP_WIDTHS = (16, 32, 64)
GROUP_STRIDES = (1, 2, 2)


def _bn_relu(x, name: str):
  """The pre-activation: BatchNormalization then ReLU, named `{name}_bn`, `{name}_relu`."""
  x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
  return keras.layers.ReLU(name=f"{name}_relu")(x)


def _preact_block(x, layers: LayerFactory, filters: int, strides: int, dropout: float,
                  prefix: str):
  """One pre-activation block; the shortcut is a 1x1 projection when shapes change."""
  preact = _bn_relu(x, f"{prefix}_pre1")
  y = layers.conv2d(filters, 3, f"{prefix}_conv1", strides=strides, use_bias=False)(preact)
  shortcut = x
  if strides != 1 or x.shape[-1] != filters:
    shortcut = layers.conv2d(filters, 1, f"{prefix}_shortcut", strides=strides,
                             use_bias=False)(preact)
  y = _bn_relu(y, f"{prefix}_pre2")
  if dropout > 0:
    y = keras.layers.Dropout(dropout, name=f"{prefix}_dropout")(y)
  y = layers.conv2d(filters, 3, f"{prefix}_conv2", use_bias=False)(y)
  return keras.layers.Add(name=f"{prefix}_add")([shortcut, y])


def wide_resnet(num_classes: int, input_shape: tuple[int, ...], layers: LayerFactory, *,
                depth: int, widen_factor: int, first_kernel_size: int,
                dropout: float, name: str) -> keras.Model:
  """Builds a pre-activation Wide ResNet of `depth` = 6n + 4 and width `widen_factor`.

  Args:
    num_classes: number of logits.
    input_shape: (height, width, channels).
    layers: the LayerFactory that initializes the weight layers.
    depth: total conv layers, 6n + 4 for n blocks per group.
    widen_factor: multiplier k on the group widths 16, 32, 64.
    first_kernel_size: side of the square stem kernel.
    dropout: dropout rate between the two convs of a block, in [0, 1).
    name: the model's name.

  Returns:
    A functional model; see the module docstring for its weight-layer names.
  """
  check_positive_int("first_kernel_size", first_kernel_size)
  if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
    raise ValueError(f"dropout={dropout!r} must be a number in [0, 1).")
  blocks_per_group = (depth - 4) // 6
  image = image_input(input_shape)
  x = layers.conv2d(STEM_WIDTH, first_kernel_size, "conv1", use_bias=False)(image)
  for group, (width, strides) in enumerate(zip(GROUP_WIDTHS, GROUP_STRIDES), start=1):
    for block in range(1, blocks_per_group + 1):
      x = _preact_block(x, layers, width * widen_factor, strides if block == 1 else 1,
                        dropout, f"block{group}_{block}")
  x = _bn_relu(x, "final")
  x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
  return keras.Model(image, layers.logits(num_classes)(x), name=name)


@register("wrn28_4")
def wrn28_4(num_classes: int, input_shape: tuple[int, ...], layers: LayerFactory, *,
            first_kernel_size: int = 3, dropout: float = 0.0) -> keras.Model:
  """Builds WRN-28-4.

  Args:
    num_classes: number of logits.
    input_shape: (height, width, channels).
    layers: the LayerFactory that initializes the weight layers.
    first_kernel_size: side of the stem kernel: 3, or 5 as in Maennel et al. Fig. 3.
    dropout: dropout rate inside each block, in [0, 1); 0 adds no Dropout layer.
      Its randomness follows Keras' global seed (`keras.utils.set_random_seed`).

  Returns:
    A functional model with 29 weight layers (see the module docstring).
  """
  return wide_resnet(num_classes, input_shape, layers, depth=28, widen_factor=4,
                     first_kernel_size=first_kernel_size, dropout=dropout, name="wrn28_4")
