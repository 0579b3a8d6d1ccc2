"""Tests for tfrandlabels.analysis.attribution: shapes, determinism and closed forms."""
import keras
import numpy as np
import pytest

from tfrandlabels.analysis import attribution

EPSILON = 1e-7  # tf-keras-vis adds keras.backend.epsilon() to the normalizer.


def min_max(array):
  """Per-image min-max normalization, as tf-keras-vis does it."""
  low = array.min(axis=(1, 2), keepdims=True)
  high = array.max(axis=(1, 2), keepdims=True)
  return (array - low) / (high - low + EPSILON)


def set_weights(layer, kernel, bias=None):
  layer.set_weights([np.asarray(kernel, np.float32),
                     np.zeros(layer.bias.shape, np.float32) if bias is None else bias])


@pytest.fixture(scope="module")
def tiny_cnn():
  """Conv2D(4, 3) -> GlobalAveragePooling -> Dense(5), valid padding: 8x8 -> 6x6."""
  image = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(4, 3, activation="relu", name="conv",
                          kernel_initializer=keras.initializers.HeNormal(seed=1))(image)
  x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
  logits = keras.layers.Dense(5, name="logits",
                              kernel_initializer=keras.initializers.HeNormal(seed=2))(x)
  return keras.Model(image, logits)


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).uniform(size=(3, 8, 8, 3)).astype(np.float32)


def linear_model(activation=None):
  """logits = sum(w * x) + b over the flattened 4x5x2 image, 3 classes."""
  image = keras.Input((4, 5, 2))
  x = keras.layers.Flatten()(image)
  output = keras.layers.Dense(3, activation=activation, name="logits")(x)
  model = keras.Model(image, output)
  kernel = np.random.default_rng(3).normal(size=(40, 3))
  set_weights(model.get_layer("logits"), kernel, np.array([0.1, -0.2, 0.3], np.float32))
  return model, kernel.reshape(4, 5, 2, 3)


def test_maps_have_image_shape_and_lie_in_unit_interval(tiny_cnn, images):
  labels = [0, 3, 4]
  for maps in (attribution.saliency_maps(tiny_cnn, images, labels, smooth_samples=3),
               attribution.gradcam_plus_plus(tiny_cnn, images, labels)):
    assert maps.shape == (3, 8, 8) and maps.dtype == np.float32
    assert np.all(maps >= 0) and np.all(maps <= 1)
    # Each map spans [0, 1], or is all 0 where nothing speaks for the label (Grad-CAM++).
    peaks = maps.max(axis=(1, 2))
    assert np.all((peaks == 0) | np.isclose(peaks, 1.0, atol=1e-3)), peaks


def test_smoothgrad_is_deterministic_for_a_seed_and_keeps_the_global_rng(tiny_cnn, images):
  np.random.seed(123)
  expected_next = np.random.random()
  np.random.seed(123)
  first = attribution.saliency_maps(tiny_cnn, images, [1, 1, 2], smooth_samples=3, seed=7)
  assert np.random.random() == expected_next  # the caller's generator is untouched
  again = attribution.saliency_maps(tiny_cnn, images, [1, 1, 2], smooth_samples=3, seed=7)
  other = attribution.saliency_maps(tiny_cnn, images, [1, 1, 2], smooth_samples=3, seed=8)
  np.testing.assert_array_equal(first, again)
  assert not np.allclose(first, other)


def test_vanilla_saliency_of_a_linear_model_is_abs_weight():
  model, kernel = linear_model()
  images = np.random.default_rng(4).normal(size=(2, 4, 5, 2)).astype(np.float32)
  labels = [2, 0]
  expected = min_max(np.stack([np.abs(kernel[..., c]).max(axis=-1) for c in labels]))
  vanilla = attribution.saliency_maps(model, images, labels, smooth_samples=1, noise=0.0)
  np.testing.assert_allclose(vanilla, expected, atol=1e-5)
  # The gradient of a linear model is the same at every noisy copy.
  smooth = attribution.saliency_maps(model, images, labels, smooth_samples=3, noise=0.5)
  np.testing.assert_allclose(smooth, expected, atol=1e-5)


def test_softmax_output_is_explained_through_its_logits_without_changing_the_model():
  model, kernel = linear_model(activation="softmax")
  images = np.random.default_rng(5).normal(size=(1, 4, 5, 2)).astype(np.float32)
  maps = attribution.saliency_maps(model, images, [1], smooth_samples=1, noise=0.0)
  np.testing.assert_allclose(maps[0], min_max(np.abs(kernel[None, ..., 1]).max(axis=-1))[0],
                             atol=1e-5)
  np.testing.assert_allclose(model(images).numpy().sum(), 1.0, rtol=1e-5)  # still softmax


def one_channel_cam_model(dense_kernel):
  """Conv2D(1, 1x1, identity on channel 0) -> ReLU -> GlobalAveragePooling -> Dense."""
  image = keras.Input((8, 8, 3))
  conv = keras.layers.Conv2D(1, 1, activation="relu", name="conv")
  x = keras.layers.GlobalAveragePooling2D()(conv(image))
  dense = keras.layers.Dense(2, name="logits")
  model = keras.Model(image, dense(x))
  set_weights(conv, np.array([1.0, 0.0, 0.0]).reshape(1, 1, 3, 1))
  set_weights(dense, dense_kernel)
  return model


def test_gradcam_plus_plus_highlights_the_only_active_region():
  model = one_channel_cam_model([[1.0, -1.0]])
  image = np.zeros((1, 8, 8, 3), np.float32)
  image[0, 2:5, 3:6, 0] = 1.0
  image[0, :, :, 1:] = 0.7  # other channels carry no signal through the 1x1 conv
  expected = np.zeros((8, 8), np.float32)
  expected[2:5, 3:6] = 1.0
  np.testing.assert_allclose(attribution.gradcam_plus_plus(model, image, [0])[0], expected,
                             atol=1e-5)
  # Class 1's gradient is negative everywhere: Grad-CAM++ keeps positive evidence only.
  np.testing.assert_allclose(attribution.gradcam_plus_plus(model, image, [1])[0], 0.0,
                             atol=1e-6)


def test_gradcam_plus_plus_matches_the_paper_formula_in_numpy():
  image = keras.Input((8, 8, 3))
  features = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv",
                                 kernel_initializer=keras.initializers.HeNormal(seed=5))(image)
  logits = keras.layers.Dense(5, name="logits")(keras.layers.Flatten()(features))
  model = keras.Model(image, logits)
  rng = np.random.default_rng(6)
  # Small weights keep 2 g^2 + g^3 sum(A) away from 0, where the formula is ill-conditioned.
  set_weights(model.get_layer("logits"), rng.normal(scale=0.01, size=(256, 5)))
  images = rng.uniform(size=(2, 8, 8, 3)).astype(np.float32)
  labels = [1, 4]

  activations = keras.Model(image, features)(images).numpy().astype(np.float64)
  dense_kernel = model.get_layer("logits").get_weights()[0].astype(np.float64)
  expected = []
  for a, label in zip(activations, labels):
    grads = dense_kernel[:, label].reshape(8, 8, 4)  # d logit / d A, exact for this model
    # Chattopadhay et al., eq. 19, with Y = exp(S): the exp(S) factors cancel in alpha.
    denominator = 2 * grads**2 + grads**3 * a.sum(axis=(0, 1))
    alpha = np.where(grads != 0, grads**2 / np.where(grads != 0, denominator, 1), 0)
    alpha = alpha / alpha.sum(axis=(0, 1))
    weights = (alpha * np.maximum(grads, 0)).sum(axis=(0, 1))
    expected.append(np.maximum(a @ weights, 0))
  maps = attribution.gradcam_plus_plus(model, images, labels)
  np.testing.assert_allclose(maps, min_max(np.stack(expected)), atol=1e-4)


def test_gradcam_plus_plus_is_finite_for_huge_logits():
  small = one_channel_cam_model([[1.0, 0.5]])
  huge = one_channel_cam_model([[1000.0, 500.0]])
  image = np.random.default_rng(7).uniform(size=(1, 8, 8, 3)).astype(np.float32)
  assert huge(image).numpy().min() > 100  # exp(logit) overflows float32
  maps = attribution.gradcam_plus_plus(huge, image, [0])
  assert np.all(np.isfinite(maps))
  np.testing.assert_allclose(maps, attribution.gradcam_plus_plus(small, image, [0]), atol=1e-5)


def test_default_layer_is_the_last_spatial_one(tiny_cnn, images):
  assert attribution.last_spatial_layer(tiny_cnn) == "conv"
  np.testing.assert_array_equal(
      attribution.gradcam_plus_plus(tiny_cnn, images, [0, 1, 2]),
      attribution.gradcam_plus_plus(tiny_cnn, images, [0, 1, 2], layer_name="conv"))
  with pytest.raises(ValueError, match="layer_name='pool' .* allowed: conv"):
    attribution.gradcam_plus_plus(tiny_cnn, images, [0, 1, 2], layer_name="pool")
  mlp, _ = linear_model()
  with pytest.raises(ValueError, match="no layer with a 4-D output"):
    attribution.gradcam_plus_plus(mlp, np.zeros((1, 4, 5, 2)), [0])


@pytest.mark.parametrize("kwargs, match", [
    ({"labels": [0, 1]}, "labels must be 3 ints"),
    ({"labels": [0, 1, 5]}, r"labels must be 3 ints .* in \[0, 5\)"),
    ({"labels": [0.0, 1.0, 2.0]}, "labels must be 3 ints"),
    ({"images": np.zeros((2, 8, 8, 1))}, "images must be a non-empty batch"),
    ({"images": np.zeros((8, 8, 3))}, "images must be a non-empty batch"),
    ({"smooth_samples": 0}, "smooth_samples must be an int >= 1"),
    ({"noise": -0.1}, "noise must be >= 0"),
])
def test_bad_input_raises_a_clear_error(tiny_cnn, images, kwargs, match):
  arguments = {"images": images, "labels": [0, 1, 2], **kwargs}
  with pytest.raises(ValueError, match=match):
    attribution.saliency_maps(tiny_cnn, **arguments)
