"""ResNet-18 (He et al., 2016) with BasicBlocks, for CIFAR- and ImageNet-sized inputs.

Small inputs (side <= 64) get the CIFAR stem, one 3x3 stride-1 conv and no
max-pool, so a 32x32 image keeps enough resolution for four stages; larger
inputs get the ImageNet stem, a 7x7 stride-2 conv and a 3x3 stride-2 max-pool.

Weight layers, in forward order: `conv1` (stem), then per block
`block{stage}_{block}_conv1`, where the block changes resolution or width (the
first block of stages 2-4) `block{stage}_{block}_shortcut`, a 1x1 projection
of the block input, and `block{stage}_{block}_conv2`; then `logits`. That is 18
layers on the main path (the "18") plus 3 projection shortcuts: 21 in all.
"""
import keras

from tfrandlabels.models.registry import LayerFactory, check_choice, image_input, register

STEMS = ("auto", "cifar", "imagenet")
# Largest input side that "auto" still treats as CIFAR-sized.
CIFAR_STEM_MAX_SIDE = 64
RESNET18_BLOCKS = (2, 2, 2, 2)
RESNET_WIDTHS = (64, 128, 256, 512)


def resolve_stem(stem: str, input_shape: tuple[int, ...]) -> str:
  """Returns "cifar" or "imagenet": `stem` itself, or the choice "auto" makes for `input_shape`."""
  check_choice("stem", stem, STEMS)
  if stem != "auto":
    return stem
  return "cifar" if max(input_shape[:2]) <= CIFAR_STEM_MAX_SIDE else "imagenet"


def _conv_bn(x, layers: LayerFactory, filters: int, kernel_size: int, strides: int,
             conv_name: str, bn_name: str):
  """Conv (no bias, BN supplies the shift) followed by BatchNormalization."""
  x = layers.conv2d(filters, kernel_size, conv_name, strides=strides, use_bias=False)(x)
  return keras.layers.BatchNormalization(name=bn_name)(x)


def _basic_block(x, layers: LayerFactory, filters: int, strides: int, prefix: str):
  """Two 3x3 conv-BN layers plus the identity, or a 1x1 projection when shapes change."""
  y = _conv_bn(x, layers, filters, 3, strides, f"{prefix}_conv1", f"{prefix}_bn1")
  shortcut = x
  if strides != 1 or x.shape[-1] != filters:
    shortcut = _conv_bn(x, layers, filters, 1, strides, f"{prefix}_shortcut",
                        f"{prefix}_shortcut_bn")
  y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
  y = _conv_bn(y, layers, filters, 3, 1, f"{prefix}_conv2", f"{prefix}_bn2")
  y = keras.layers.Add(name=f"{prefix}_add")([shortcut, y])
  return keras.layers.ReLU(name=f"{prefix}_relu2")(y)


@register("resnet18")
def resnet18(num_classes: int, input_shape: tuple[int, ...], layers: LayerFactory, *,
             stem: str = "auto") -> keras.Model:
  """Builds ResNet-18: stem, four stages of two BasicBlocks, global average pool, logits.

  Args:
    num_classes: number of logits.
    input_shape: (height, width, channels).
    layers: the LayerFactory that initializes the weight layers.
    stem: "cifar", "imagenet", or "auto" (CIFAR stem when both sides are <= 64).

  Returns:
    A functional model; see the module docstring for its weight-layer names.
  """
  stem = resolve_stem(stem, input_shape)
  image = image_input(input_shape)
  kernel_size, strides = (3, 1) if stem == "cifar" else (7, 2)
  x = _conv_bn(image, layers, RESNET_WIDTHS[0], kernel_size, strides, "conv1", "bn1")
  x = keras.layers.ReLU(name="relu1")(x)
  if stem == "imagenet":
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
  for stage, (num_blocks, filters) in enumerate(zip(RESNET18_BLOCKS, RESNET_WIDTHS), start=1):
    for block in range(1, num_blocks + 1):
      strides = 2 if stage > 1 and block == 1 else 1
      x = _basic_block(x, layers, filters, strides, f"block{stage}_{block}")
  x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
  return keras.Model(image, layers.logits(num_classes)(x), name="resnet18")
