"""Tests for tfrandlabels.analysis.geometry against independent numpy computations."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from tfrandlabels.analysis import geometry


def tanh_mlp(input_dim, width, seed):
  """A small random MLP whose last hidden layer has `width` tanh features."""
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((input_dim,)),
      keras.layers.Dense(6, activation="tanh"),
      keras.layers.Dense(width, activation="tanh"),
  ])


def tiny_conv_net(width, seed):
  """A tiny random conv net on 6x6x2 inputs with `width` tanh features."""
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((6, 6, 2)),
      keras.layers.Conv2D(3, 3, activation="tanh"),
      keras.layers.Flatten(),
      keras.layers.Dense(width, activation="tanh"),
  ])


def inference(model):
  return lambda x: model(x, training=False)


def looped_jacobian(feature_fn, x):
  """[B, n, d] Jacobians, one point at a time with tf.GradientTape.jacobian (no pfor)."""
  rows = []
  for example in np.asarray(x):
    example = tf.constant(example[None])
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(example)
      features = feature_fn(example)[0]
    jacobian = tape.jacobian(features, example, experimental_use_pfor=False)
    rows.append(tf.reshape(jacobian, [features.shape[0], -1]).numpy())
  return np.stack(rows)


def numpy_metric(jacobian):
  jacobian = np.asarray(jacobian, dtype=np.float64)
  return np.einsum("bni,bnj->bij", jacobian, jacobian) / jacobian.shape[1]


def erf_network(width, dim, sigma_w, sigma_b, seed):
  """A random one-hidden-layer erf feature map of the given width, in float64."""
  rng = np.random.default_rng(seed)
  weights = tf.constant(rng.normal(0, sigma_w, (dim, width)))
  biases = tf.constant(rng.normal(0, sigma_b, width))
  return lambda x: tf.math.erf(tf.matmul(x, weights) + biases)


def test_linear_feature_map_has_constant_metric():
  rng = np.random.default_rng(0)
  width, dim = 7, 4
  weights = rng.standard_normal((width, dim))
  feature_fn = lambda x: tf.matmul(x, tf.constant(weights.T))
  x = rng.standard_normal((5, dim))
  metric = geometry.pullback_metric(geometry.feature_jacobian(feature_fn, x)).numpy()
  expected = np.broadcast_to(weights.T @ weights / width, metric.shape)
  np.testing.assert_allclose(metric, expected, rtol=1e-12, atol=1e-12)
  u, v = rng.standard_normal(dim), rng.standard_normal(dim)
  plane = np.stack([u, v], axis=1)
  expected = plane.T @ weights.T @ weights @ plane / width
  np.testing.assert_allclose(geometry.plane_metric(feature_fn, x, u, v).numpy(),
                             np.broadcast_to(expected, (5, 2, 2)), rtol=1e-12, atol=1e-12)


# Reverse mode (d >= n, chunks of features) for the narrow MLP and the conv net, forward
# mode (d < n, chunks of input directions) for the wide MLP. A chunk of 3 leaves a
# partial last chunk for the conv net (n = 8) and the wide MLP (d = 4).
@pytest.mark.parametrize("model_fn, input_shape, width", [
    (lambda width: tanh_mlp(4, width, seed=1), (4,), 3),
    (lambda width: tanh_mlp(4, width, seed=1), (4,), 7),
    (lambda width: tiny_conv_net(width, seed=2), (6, 6, 2), 8),
])
def test_chunked_jacobian_matches_per_point_loop(model_fn, input_shape, width):
  feature_fn = inference(model_fn(width))
  x = np.random.default_rng(3).standard_normal((3, *input_shape)).astype(np.float32)
  expected = looped_jacobian(feature_fn, x)
  assert expected.shape == (3, width, math.prod(input_shape))
  for chunk_size in (None, 1, 3, 100):
    jacobian = geometry.feature_jacobian(feature_fn, x, chunk_size=chunk_size)
    assert jacobian.dtype == tf.float32
    np.testing.assert_allclose(jacobian.numpy(), expected, rtol=1e-5, atol=1e-6,
                               err_msg=f"chunk_size={chunk_size}")


def test_feature_jacobian_rejects_bad_arguments():
  feature_fn = inference(tanh_mlp(4, 5, seed=0))
  x = np.zeros((2, 4), np.float32)
  with pytest.raises(ValueError, match="chunk_size"):
    geometry.feature_jacobian(feature_fn, x, chunk_size=0)
  with pytest.raises(ValueError, match="Flatten"):
    geometry.feature_jacobian(lambda x: tf.stack([x, x], axis=1), x)
  with pytest.raises(ValueError, match="batch axis"):
    geometry.feature_jacobian(feature_fn, np.zeros(4, np.float32))


def test_plane_metric_from_jvps_matches_full_jacobian():
  feature_fn = inference(tiny_conv_net(8, seed=4))
  rng = np.random.default_rng(5)
  x = rng.standard_normal((3, 6, 6, 2)).astype(np.float32)
  metric = numpy_metric(geometry.feature_jacobian(feature_fn, x))
  # One direction pair for every point, then one pair per point.
  for u, v in [(rng.standard_normal((6, 6, 2)), rng.standard_normal((6, 6, 2))),
               (rng.standard_normal((3, 6, 6, 2)), rng.standard_normal((3, 6, 6, 2)))]:
    plane = np.stack([np.broadcast_to(u, x.shape).reshape(3, -1),
                      np.broadcast_to(v, x.shape).reshape(3, -1)], axis=2)
    expected = np.einsum("bdi,bde,bej->bij", plane, metric, plane)
    got = geometry.plane_metric(feature_fn, x, u, v).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got, np.swapaxes(got, 1, 2))
  with pytest.raises(ValueError, match="shape"):
    geometry.plane_metric(feature_fn, x, np.zeros(5), np.zeros(5))


def test_log10_volume_equals_log_sqrt_det_in_two_dimensions():
  feature_fn = inference(tanh_mlp(2, 9, seed=6))
  x = np.random.default_rng(7).standard_normal((6, 2)).astype(np.float32)
  jacobian = looped_jacobian(feature_fn, x)
  sqrt_det = np.sqrt(np.linalg.det(numpy_metric(jacobian)))
  log_volume, num_zero = geometry.log10_volume(geometry.feature_jacobian(feature_fn, x))
  assert log_volume.dtype == np.float64
  np.testing.assert_array_equal(num_zero, 0)
  np.testing.assert_allclose(log_volume, np.log10(sqrt_det), atol=1e-5)
  np.testing.assert_allclose(geometry.volume_element_2d(feature_fn, x), sqrt_det, rtol=1e-5)
  # A single feature has rank <= 1: no area.
  np.testing.assert_array_equal(geometry.volume_element_2d(lambda x: x[:, :1] ** 2, x), 0.0)
  with pytest.raises(ValueError, match="2-D inputs"):
    geometry.volume_element_2d(inference(tanh_mlp(3, 4, seed=0)), np.zeros((2, 3)))


def test_log10_volume_with_more_features_than_inputs():
  rng = np.random.default_rng(8)
  jacobian = rng.standard_normal((4, 12, 5))
  metric = numpy_metric(jacobian)
  log_volume, num_zero = geometry.log10_volume(jacobian)
  np.testing.assert_array_equal(num_zero, 0)
  np.testing.assert_allclose(log_volume, 0.5 * np.log10(np.linalg.det(metric)), rtol=1e-10)
  # Top 3: the three largest eigenvalues of g, each the square of a singular value.
  top3 = np.sort(np.linalg.eigvalsh(metric), axis=1)[:, -3:]
  np.testing.assert_allclose(geometry.log10_volume(jacobian, k=3)[0],
                             0.5 * np.log10(top3).sum(axis=1), rtol=1e-10)
  with pytest.raises(ValueError, match="k must be"):
    geometry.log10_volume(jacobian, k=6)


def test_log10_volume_counts_zero_singular_values():
  rng = np.random.default_rng(9)
  # Rank 2 Jacobians, n = 6 features and d = 5 inputs: three zero singular values.
  jacobian = rng.standard_normal((3, 6, 2)) @ rng.standard_normal((3, 2, 5))
  nonzero_eigenvalues = np.sort(np.linalg.eigvalsh(numpy_metric(jacobian)), axis=1)[:, -2:]
  for dtype in (np.float64, np.float32):
    log_volume, num_zero = geometry.log10_volume(jacobian.astype(dtype))
    np.testing.assert_array_equal(num_zero, 3)
    assert np.all(np.isfinite(log_volume))
    np.testing.assert_allclose(log_volume, 0.5 * np.log10(nonzero_eigenvalues).sum(axis=1),
                               rtol=1e-5)
  log_volume, num_zero = geometry.log10_volume(np.zeros((2, 4, 3)))
  np.testing.assert_array_equal(log_volume, 0.0)
  np.testing.assert_array_equal(num_zero, 3)


def test_log10_volume_of_float32_jacobians_matches_float64():
  # Wide float32 Jacobians (n = 16 features, d = 300 inputs) with singular values from
  # 1 down to 1e-3: the float32 path (eigenvalues of the Gram matrix) against the
  # float64 path (QR) on the same entries.
  rng = np.random.default_rng(10)
  left = np.linalg.qr(rng.standard_normal((3, 16, 16)))[0]
  right = np.linalg.qr(rng.standard_normal((3, 300, 16)))[0]
  jacobian = (left * np.logspace(0, -3, 16)) @ np.swapaxes(right, 1, 2)
  single = jacobian.astype(np.float32)
  log_volume, num_zero = geometry.log10_volume(single)
  np.testing.assert_array_equal(num_zero, 0)
  np.testing.assert_allclose(log_volume, geometry.log10_volume(single.astype(np.float64))[0],
                             atol=1e-5)
  np.testing.assert_allclose(log_volume, np.sum(np.log10(np.logspace(0, -3, 16) / 4)),
                             atol=1e-3)


def test_log10_volume_does_not_overflow():
  # 400 singular values of 10: the volume 10^400 overflows float64, its log does not.
  width = 400
  jacobian = 10 * math.sqrt(width) * np.eye(width)[None]
  log_volume, num_zero = geometry.log10_volume(jacobian)
  np.testing.assert_allclose(log_volume, [400.0])
  np.testing.assert_array_equal(num_zero, [0])


def test_plane_through_three_inputs():
  rng = np.random.default_rng(10)
  x1, x2, x3 = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(3))
  resolution = 5
  points, coords, origin, u, v = geometry.plane_through(x1, x2, x3, resolution=resolution,
                                                        extent=2.0)
  assert points.shape == (resolution**2, 3, 4) and points.dtype == np.float32
  assert coords.shape == (resolution**2, 2)
  np.testing.assert_allclose(origin, (x1 + x2 + x3) / 3, rtol=1e-6)
  grid = coords.reshape(resolution, resolution, 2)
  axis = np.linspace(-2.0, 2.0, resolution)
  np.testing.assert_allclose(grid[..., 0], np.broadcast_to(axis, (resolution, resolution)))
  np.testing.assert_allclose(grid[..., 1], np.broadcast_to(axis[:, None],
                                                           (resolution, resolution)))
  for point, (a, b) in zip(points, coords):
    np.testing.assert_allclose(point, origin + a * u + b * v, rtol=1e-5, atol=1e-5)
  # Solving x_i - c = a u + b v with u = x2 - x1, v = (x1 + x2 - 2 x3) / sqrt(3) gives
  # the vertices of a unit equilateral triangle.
  vertices = {(-0.5, 1 / (2 * math.sqrt(3))): x1, (0.5, 1 / (2 * math.sqrt(3))): x2,
              (0.0, -1 / math.sqrt(3)): x3}
  for (a, b), image in vertices.items():
    np.testing.assert_allclose(origin + a * u + b * v, image, rtol=1e-5, atol=1e-5)
  corners = np.array(list(vertices))
  np.testing.assert_allclose(np.linalg.norm(corners - np.roll(corners, 1, axis=0), axis=1), 1)
  with pytest.raises(ValueError, match="one line"):
    geometry.plane_through(x1, x2, 2 * x2 - x1)


def test_prediction_entropy():
  rng = np.random.default_rng(11)
  logits = rng.standard_normal((7, 5))
  probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  np.testing.assert_allclose(geometry.prediction_entropy(probabilities),
                             stats.entropy(probabilities, base=10, axis=1), rtol=1e-12)
  np.testing.assert_allclose(geometry.prediction_entropy(np.full((2, 4), 0.25)),
                             math.log10(4), rtol=1e-12)
  np.testing.assert_array_equal(geometry.prediction_entropy(np.eye(3)), 0.0)
  with pytest.raises(ValueError, match="softmax"):
    geometry.prediction_entropy(logits)


def test_magnification_of_correlated_and_independent_entropy():
  rng = np.random.default_rng(12)
  log_volume = rng.standard_normal(2000)
  correlated = geometry.magnification(log_volume, 0.1 * log_volume
                                      + 0.01 * rng.standard_normal(2000))
  assert correlated["rank_correlation"] > 0.98
  assert correlated["volume_ratio"] > 1
  independent = geometry.magnification(log_volume, rng.uniform(size=2000))
  assert abs(independent["rank_correlation"]) < 0.1
  assert all(isinstance(value, float) for value in correlated.values())


def test_magnification_matches_direct_computation():
  rng = np.random.default_rng(13)
  log_volume, entropy = rng.standard_normal(20), rng.uniform(size=20)
  result = geometry.magnification(log_volume, entropy)
  order = np.argsort(entropy)
  expected = np.mean(10**log_volume[order[-2:]]) / np.mean(10**log_volume[order[:10]])
  assert result["volume_ratio"] == pytest.approx(expected, rel=1e-10)
  assert result["log10_volume_ratio"] == pytest.approx(math.log10(expected), abs=1e-10)
  assert result["rank_correlation"] == pytest.approx(
      stats.spearmanr(log_volume, entropy).statistic, abs=1e-12)
  # Tied values share their mean rank, as in Spearman's correlation.
  tied_volume, tied_entropy = np.round(log_volume), np.round(entropy, 1)
  assert geometry.magnification(tied_volume, tied_entropy)["rank_correlation"] == (
      pytest.approx(stats.spearmanr(tied_volume, tied_entropy).statistic, abs=1e-12))
  # Log volumes of a few thousand (d = 3072 images) overflow 10**x; the ratio does not.
  shifted = geometry.magnification(log_volume + 3000, entropy)
  assert shifted["volume_ratio"] == pytest.approx(expected, rel=1e-8)


def test_magnification_rejects_bad_inputs():
  with pytest.raises(ValueError, match="same length"):
    geometry.magnification(np.zeros(20), np.zeros(19))
  with pytest.raises(ValueError, match="at least 10"):
    geometry.magnification(np.zeros(9), np.zeros(9))
  with pytest.raises(ValueError, match="finite"):
    geometry.magnification(np.full(20, -np.inf), np.zeros(20))


def test_wide_erf_network_approaches_closed_form_metric():
  sigma_w, sigma_b, dim = 1.5, 0.5, 3
  x = np.random.default_rng(14).standard_normal((4, dim)) * 0.7
  expected = geometry.erf_network_metric(x, sigma_w, sigma_b)
  errors = []
  for width in (200, 20000):
    feature_fn = erf_network(width, dim, sigma_w, sigma_b, seed=15)
    metric = geometry.pullback_metric(geometry.feature_jacobian(feature_fn, x)).numpy()
    errors.append(np.max(np.abs(metric - expected)) / np.max(np.abs(expected)))
  assert errors[1] < errors[0] / 3
  assert errors[1] < 0.05


def test_erf_network_volume_is_radial():
  rng = np.random.default_rng(16)
  sigma_w, sigma_b, dim = 0.8, 0.3, 4
  x = rng.standard_normal((5, dim))
  rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
  rotated = x @ rotation.T
  metric = geometry.erf_network_metric(x, sigma_w, sigma_b)
  volume = geometry.erf_network_volume(x, sigma_w, sigma_b)
  np.testing.assert_allclose(volume, np.sqrt(np.linalg.det(metric)), rtol=1e-12)
  np.testing.assert_allclose(geometry.erf_network_volume(rotated, sigma_w, sigma_b), volume,
                             rtol=1e-12)
  # The metric turns with its input: g(R x) = R g(x) R^T.
  np.testing.assert_allclose(geometry.erf_network_metric(rotated, sigma_w, sigma_b),
                             rotation @ metric @ rotation.T, atol=1e-12)
  norms = np.linalg.norm(x, axis=1)
  assert np.all(np.diff(volume[np.argsort(norms)]) < 0)


def test_wide_erf_network_volume_element_in_two_dimensions():
  sigma_w, sigma_b = 1.0, 0.2
  x = np.array([[0.0, 0.0], [0.6, 0.0], [0.0, -0.6], [1.2, 0.9]])
  feature_fn = erf_network(20000, 2, sigma_w, sigma_b, seed=17)
  np.testing.assert_allclose(geometry.volume_element_2d(feature_fn, x),
                             geometry.erf_network_volume(x, sigma_w, sigma_b), rtol=0.05)
