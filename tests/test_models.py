"""Tests for the model zoo: shapes, parameter counts against closed forms, init and seeding."""
import math

import keras
import numpy as np
import pytest

from tfrandlabels import models
from tfrandlabels.models import resnet

NUM_CLASSES = 10
CIFAR_SHAPE = (32, 32, 3)
SEED = 11


@pytest.fixture(scope="module")
def built():
  """Every family built once, at the sizes the tests below check."""
  return {
      "simple_cnn": models.build_model("simple_cnn", NUM_CLASSES, CIFAR_SHAPE, seed=SEED),
      "mlp": models.build_model("mlp", NUM_CLASSES, CIFAR_SHAPE, widths=(2048, 256), seed=SEED),
      "vgg16": models.build_model("vgg16", NUM_CLASSES, CIFAR_SHAPE, seed=SEED),
      "resnet18": models.build_model("resnet18", NUM_CLASSES, CIFAR_SHAPE, seed=SEED),
      "resnet18_imagenet": models.build_model("resnet18", NUM_CLASSES, (64, 64, 3),
                                              stem="imagenet", seed=SEED),
      "wrn28_4": models.build_model("wrn28_4", NUM_CLASSES, CIFAR_SHAPE,
                                    first_kernel_size=5, seed=SEED),
  }


def _conv(kernel_size, cin, cout, bias=False):
  return kernel_size * kernel_size * cin * cout + (cout if bias else 0)


def _trainable_params(model):
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _names(model):
  return [layer.name for layer in models.weight_layers(model)]


def test_registry_lists_every_family():
  assert models.available_models() == ("mlp", "ntk_mlp", "resnet18", "simple_cnn",
                                      "strided_cnn", "vgg16", "wrn28_4")
  assert set(models.MODELS) == set(models.available_models())


@pytest.mark.parametrize("key", ["simple_cnn", "mlp", "vgg16", "resnet18", "resnet18_imagenet",
                                 "wrn28_4"])
def test_outputs_float32_logits_of_shape_batch_by_classes(built, key):
  model = built[key]
  images = np.random.default_rng(0).uniform(size=(2, *model.input_shape[1:])).astype("float32")
  logits = np.asarray(model(images, training=False))
  assert logits.shape == (2, NUM_CLASSES)
  assert logits.dtype == np.float32
  assert np.all(np.isfinite(logits))
  # Logits, not probabilities: rows need not be non-negative or sum to one.
  assert not np.allclose(logits.sum(axis=1), 1.0)


@pytest.mark.parametrize("key", ["simple_cnn", "mlp", "vgg16", "resnet18", "resnet18_imagenet",
                                 "wrn28_4"])
def test_kernels_are_seed_plus_index_he_normal_and_biases_zero(built, key):
  for index, layer in enumerate(models.weight_layers(built[key])):
    expected = keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_in", distribution="untruncated_normal", seed=SEED + index)(
            layer.kernel.shape)
    np.testing.assert_array_equal(np.asarray(layer.kernel), np.asarray(expected),
                                  err_msg=layer.name)
    if layer.bias is not None:
      assert not np.any(np.asarray(layer.bias))


def test_simple_cnn_matches_closed_form(built):
  model = built["simple_cnn"]
  assert _names(model) == ["conv1", "dense1", "logits"]
  assert model.get_layer("conv1").kernel.shape == (3, 3, 3, 256)
  expected = (3 * 3 * 3 * 256 + 256) + (30 * 30 * 256 * 64 + 64) + (64 * 10 + 10)
  assert model.count_params() == expected


def test_mlp_matches_closed_form(built):
  model = built["mlp"]
  assert _names(model) == ["dense1", "dense2", "logits"]
  expected = (32 * 32 * 3 * 2048 + 2048) + (2048 * 256 + 256) + (256 * 10 + 10)
  assert model.count_params() == expected
  default = models.build_model("mlp", NUM_CLASSES, (8, 8, 1))
  assert default.count_params() == (64 * 256 + 256) + (256 * 256 + 256) + (256 * 10 + 10)


def test_vgg16_has_13_convs_and_one_linear_classifier(built):
  model = built["vgg16"]
  layers = models.weight_layers(model)
  assert _names(model) == [f"conv{i}" for i in range(1, 14)] + ["logits"]
  assert sum(isinstance(layer, keras.layers.Conv2D) for layer in layers) == 13
  assert sum(isinstance(layer, keras.layers.Dense) for layer in layers) == 1
  # Five pools take 32x32 to 1x1x512: the flattened features feed the classifier directly.
  assert model.get_layer("logits").kernel.shape == (512, NUM_CLASSES)
  widths = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
  expected = sum(_conv(3, cin, cout, bias=True) for cin, cout in zip((3, *widths[:-1]), widths))
  assert model.count_params() == expected + 512 * NUM_CLASSES + NUM_CLASSES


def test_vgg16_width_divisor_keeps_the_depth_and_divides_the_channels():
  model = models.build_model("vgg16", NUM_CLASSES, CIFAR_SHAPE, width_divisor=8)
  assert _names(model) == [f"conv{i}" for i in range(1, 14)] + ["logits"]
  widths = (8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64)
  assert [layer.kernel.shape[-1] for layer in models.weight_layers(model)[:-1]] == list(widths)
  expected = sum(_conv(3, cin, cout, bias=True) for cin, cout in zip((3, *widths[:-1]), widths))
  assert model.count_params() == expected + 64 * NUM_CLASSES + NUM_CLASSES


def test_vgg16_batch_norm_drops_conv_bias():
  model = models.build_model("vgg16", NUM_CLASSES, CIFAR_SHAPE, batch_norm=True)
  batch_norms = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
  assert len(batch_norms) == 13
  assert all(layer.bias is None for layer in models.weight_layers(model)[:-1])


def _resnet18_trainable_params(stem_kernel):
  total = _conv(stem_kernel, 3, 64) + 2 * 64
  cin = 64
  for width in (64, 128, 256, 512):
    for block in range(2):
      total += _conv(3, cin, width) + _conv(3, width, width) + 2 * (2 * width)
      if cin != width:
        total += _conv(1, cin, width) + 2 * width
      cin = width
  return total + 512 * NUM_CLASSES + NUM_CLASSES


def test_resnet18_counts_18_main_path_layers_plus_3_shortcuts(built):
  names = _names(built["resnet18"])
  shortcuts = [n for n in names if n.endswith("shortcut")]
  assert len(names) == 21
  assert shortcuts == ["block2_1_shortcut", "block3_1_shortcut", "block4_1_shortcut"]
  assert len(names) - len(shortcuts) == 18
  assert names[0] == "conv1" and names[-1] == "logits"
  assert built["resnet18"].get_layer("block2_1_shortcut").kernel.shape == (1, 1, 64, 128)
  assert _trainable_params(built["resnet18"]) == _resnet18_trainable_params(3)


def test_resnet18_stems(built):
  cifar, imagenet = built["resnet18"], built["resnet18_imagenet"]
  assert cifar.get_layer("conv1").kernel.shape == (3, 3, 3, 64)
  assert cifar.get_layer("conv1").strides == (1, 1)
  assert not any(l.name == "pool1" for l in cifar.layers)
  assert imagenet.get_layer("conv1").kernel.shape == (7, 7, 3, 64)
  assert imagenet.get_layer("conv1").strides == (2, 2)
  # 64 -> 32 (stem conv) -> 16 (max-pool) -> 16, 8, 4, 2 through the four stages.
  assert imagenet.get_layer("pool1").output.shape[1:3] == (16, 16)
  assert imagenet.get_layer("block4_2_add").output.shape[1:3] == (2, 2)
  assert _trainable_params(imagenet) == _resnet18_trainable_params(7)
  assert resnet.resolve_stem("auto", (64, 64, 3)) == "cifar"
  assert resnet.resolve_stem("auto", (65, 65, 3)) == "imagenet"
  assert resnet.resolve_stem("auto", (224, 224, 3)) == "imagenet"
  assert resnet.resolve_stem("cifar", (224, 224, 3)) == "cifar"


def _wrn28_4_trainable_params(stem_kernel):
  total = _conv(stem_kernel, 3, 16)
  cin = 16
  for width in (64, 128, 256):
    for block in range(4):
      total += 2 * cin + _conv(3, cin, width) + 2 * width + _conv(3, width, width)
      if cin != width:
        total += _conv(1, cin, width)
      cin = width
  return total + 2 * 256 + 256 * NUM_CLASSES + NUM_CLASSES


def test_wrn28_4_counts_28_convs_including_3_shortcuts(built):
  model = built["wrn28_4"]
  layers = models.weight_layers(model)
  convs = [l for l in layers if isinstance(l, keras.layers.Conv2D)]
  shortcuts = [l.name for l in convs if l.name.endswith("shortcut")]
  assert len(convs) == 28 and len(layers) == 29
  assert shortcuts == ["block1_1_shortcut", "block2_1_shortcut", "block3_1_shortcut"]
  assert layers[0].name == "conv1" and layers[-1].name == "logits"
  assert layers[0].kernel.shape == (5, 5, 3, 16)
  assert model.get_layer("block3_4_conv2").kernel.shape == (3, 3, 256, 256)
  assert _trainable_params(model) == _wrn28_4_trainable_params(5)


def test_wrn28_4_defaults_to_3x3_stem_and_adds_dropout_when_asked():
  model = models.build_model("wrn28_4", NUM_CLASSES, (16, 16, 3), dropout=0.3)
  assert model.get_layer("conv1").kernel.shape == (3, 3, 3, 16)
  dropouts = [l for l in model.layers if isinstance(l, keras.layers.Dropout)]
  assert len(dropouts) == 12 and all(l.rate == 0.3 for l in dropouts)


def test_init_scale_multiplies_the_he_std():
  base, doubled = (models.build_model("simple_cnn", NUM_CLASSES, CIFAR_SHAPE, seed=5,
                                      init_scale=scale) for scale in (1.0, 2.0))
  for name, fan_in, rtol in (("conv1", 3 * 3 * 3, 0.05), ("dense1", 30 * 30 * 256, 0.01)):
    std_1 = np.std(np.asarray(base.get_layer(name).kernel))
    std_2 = np.std(np.asarray(doubled.get_layer(name).kernel))
    np.testing.assert_allclose(std_2 / std_1, 2.0, rtol=1e-5)
    np.testing.assert_allclose(std_1, math.sqrt(2.0 / fan_in), rtol=rtol)
    np.testing.assert_allclose(std_2, 2.0 * math.sqrt(2.0 / fan_in), rtol=rtol)


def test_same_seed_gives_identical_weights_and_other_seed_does_not():
  # NumPy integers are accepted wherever an int is.
  first, second, other = (models.build_model("mlp", NUM_CLASSES, (8, 8, 3), seed=seed)
                          for seed in (7, np.int64(7), 8))
  for a, b, c in zip(first.get_weights(), second.get_weights(), other.get_weights()):
    np.testing.assert_array_equal(a, b)
    if a.ndim == 2:  # Kernels; biases are zero for every seed.
      assert not np.array_equal(a, c)


def test_logits_stay_float32_under_mixed_precision():
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy("mixed_float16")
  try:
    model = models.build_model("simple_cnn", NUM_CLASSES, (8, 8, 3), filters=4, hidden=4)
  finally:
    keras.config.set_dtype_policy(previous)
  assert model.get_layer("conv1").compute_dtype == "float16"
  logits = model(np.zeros((2, 8, 8, 3), "float32"))
  assert logits.dtype == "float32"


def test_a_registered_function_becomes_a_model():
  @models.register("test_linear")
  def test_linear(num_classes, input_shape, layers, *, scale_input=1.0):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs * scale_input)
    return keras.Model(inputs, layers.logits(num_classes)(x))

  try:
    model = models.build_model("test_linear", 3, (2, 2, 1), scale_input=2.0, seed=0)
    assert model.output.shape == (None, 3)
    with pytest.raises(ValueError, match="already registered"):
      models.register("test_linear")(test_linear)
  finally:
    del models.MODELS["test_linear"]


@pytest.mark.parametrize("name, kwargs, match", [
    ("resnet50", {},
     r"model='resnet50'.*mlp, resnet18, simple_cnn, strided_cnn, vgg16, wrn28_4"),
    ("mlp", {"width": (8,)}, r"^width: unknown option.*init_scale, seed, widths"),
    ("resnet18", {"stem": "tiny"}, r"stem='tiny'.*auto, cifar, imagenet"),
    ("mlp", {"widths": (8, 0)}, r"widths=0"),
    ("mlp", {"widths": 8}, r"widths=8"),
    ("mlp", {"init_scale": 0.0}, r"init_scale=0.0"),
    ("mlp", {"seed": -1}, r"seed=-1"),
    ("mlp", {"seed": 1.5}, r"seed=1.5"),
    ("wrn28_4", {"dropout": 1.0}, r"dropout=1.0"),
    ("wrn28_4", {"first_kernel_size": 0}, r"first_kernel_size=0"),
    ("vgg16", {"batch_norm": "yes"}, r"batch_norm='yes'"),
    ("vgg16", {"width_divisor": 0}, r"width_divisor=0"),
    ("simple_cnn", {"hidden": -4}, r"hidden=-4"),
])
def test_bad_arguments_raise_value_error_naming_them(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    models.build_model(name, NUM_CLASSES, CIFAR_SHAPE, **kwargs)


@pytest.mark.parametrize("num_classes, input_shape, match", [
    (0, CIFAR_SHAPE, r"num_classes=0"),
    (NUM_CLASSES, (32, 0, 3), r"input_shape=\(32, 0, 3\)"),
    (NUM_CLASSES, (16, 16, 3), r"input_shape=\(16, 16, 3\).*>= 32"),
    (NUM_CLASSES, (32, 32), r"input_shape=\(32, 32\).*\(height, width, channels\)"),
    (NUM_CLASSES, 32, r"input_shape=\(32,\)"),
])
def test_bad_shapes_raise_value_error_naming_them(num_classes, input_shape, match):
  with pytest.raises(ValueError, match=match):
    models.build_model("vgg16", num_classes, input_shape)
