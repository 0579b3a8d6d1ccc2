"""Tests for tfrandlabels.analysis.alignment against independent numpy computations, and
for the subspace overlap's k as the alignment analysis and the transfer experiment check,
record and report it."""
from absl import flags
import keras
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from conftest import parse_flagfile
from tfrandlabels.analyses import alignment as alignment_analysis
from tfrandlabels.analysis import alignment
from tfrandlabels.errors import ConfigError
from tfrandlabels.pipeline import report


def random_spd(rng, dim):
  """A random symmetric positive definite matrix with well separated eigenvalues."""
  factor = rng.standard_normal((dim, 2 * dim))
  return factor @ factor.T / (2 * dim) + 0.1 * np.eye(dim)


def random_rotation(rng, dim):
  q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
  return q


def commuting_pair(rng, dim):
  """Two covariances with the same eigenvectors and different, distinct eigenvalues."""
  rotation = random_rotation(rng, dim)
  sigma_x = rotation @ np.diag(np.linspace(1.0, 5.0, dim)) @ rotation.T
  sigma_w = rotation @ np.diag(np.geomspace(0.01, 100.0, dim)[::-1]) @ rotation.T
  return sigma_x, sigma_w


def numpy_misalignment(sigma_x, sigma_w):
  """The paper's formula, term by term, with an explicit inverse."""
  _, eigenvectors = np.linalg.eigh(sigma_x)
  inverse = np.linalg.inv(sigma_w)
  return sum(np.sqrt((v @ sigma_w @ v) * (v @ inverse @ v)) - 1 for v in eigenvectors.T)


def numpy_patches(images, patch_size, stride):
  """All valid patches, one row each, flattened [kh, kw, c], by explicit loops."""
  (kh, kw), (sh, sw) = patch_size, stride
  rows = []
  for image in images:
    for i in range(0, image.shape[0] - kh + 1, sh):
      for j in range(0, image.shape[1] - kw + 1, sw):
        rows.append(image[i:i + kh, j:j + kw, :].reshape(-1))
  return np.asarray(rows, dtype=np.float64)


@pytest.fixture(scope="module")
def small_images():
  rng = np.random.default_rng(0)
  return rng.normal(0.5, 0.2, size=(4, 6, 7, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def structured_images():
  """Images correlated along width and scaled per channel, so that a patch flattened in
  the wrong order has a clearly different covariance."""
  rng = np.random.default_rng(1)
  images = np.cumsum(rng.standard_normal((4, 8, 9, 3)), axis=2)
  return (images * [1.0, 0.3, 2.0] + [0.5, -1.0, 3.0]).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_misalignment_matches_numpy(seed):
  rng = np.random.default_rng(seed)
  sigma_x, sigma_w = random_spd(rng, 6), random_spd(rng, 6)
  expected = numpy_misalignment(sigma_x, sigma_w)
  np.testing.assert_allclose(alignment.misalignment(sigma_x, sigma_w, ridge=0), expected,
                             rtol=1e-9)
  np.testing.assert_allclose(alignment.misalignment(sigma_x, sigma_w), expected, rtol=1e-4)


def test_misalignment_is_zero_for_commuting_pair():
  sigma_x, sigma_w = commuting_pair(np.random.default_rng(3), 7)
  assert alignment.misalignment(sigma_x, sigma_w) == pytest.approx(0, abs=1e-9)


def test_misalignment_is_positive_for_rotated_pair():
  rng = np.random.default_rng(4)
  sigma_x, sigma_w = commuting_pair(rng, 7)
  rotation = random_rotation(rng, 7)
  rotated = rotation @ sigma_w @ rotation.T
  score = alignment.misalignment(sigma_x, rotated, ridge=0)
  assert score > 1
  np.testing.assert_allclose(score, numpy_misalignment(sigma_x, rotated), rtol=1e-9)


def test_misalignment_is_nonnegative():
  rng = np.random.default_rng(5)
  for dim in (1, 2, 5, 12):
    sigma_x, sigma_w = commuting_pair(rng, dim)
    nearly = random_rotation(rng, dim) * 1e-9 + np.eye(dim)
    assert alignment.misalignment(sigma_x, nearly @ sigma_w @ nearly.T) >= 0
    assert alignment.misalignment(random_spd(rng, dim), random_spd(rng, dim)) >= 0


def test_misalignment_is_invariant_to_scale_and_joint_rotation():
  rng = np.random.default_rng(6)
  sigma_x, sigma_w = random_spd(rng, 5), random_spd(rng, 5)
  rotation = random_rotation(rng, 5)
  expected = alignment.misalignment(sigma_x, sigma_w)
  assert alignment.misalignment(3 * sigma_x, 7 * sigma_w) == pytest.approx(expected)
  assert alignment.misalignment(rotation @ sigma_x @ rotation.T,
                                rotation @ sigma_w @ rotation.T) == pytest.approx(expected)


def test_singular_sigma_w_is_regularized_by_the_ridge():
  rng = np.random.default_rng(7)
  sigma_x = random_spd(rng, 6)
  sigma_w = alignment.filter_covariance(rng.standard_normal((6, 3)))  # rank 2
  ridge = 1e-3
  regularized = sigma_w + ridge * np.trace(sigma_w) / 6 * np.eye(6)
  score = alignment.misalignment(sigma_x, sigma_w, ridge=ridge)
  assert np.isfinite(score)
  np.testing.assert_allclose(score, numpy_misalignment(sigma_x, regularized), rtol=1e-8)
  with pytest.raises(ValueError, match="ridge"):
    alignment.misalignment(sigma_x, sigma_w, ridge=0)
  with pytest.raises(ValueError, match="ridge must be >= 0"):
    alignment.misalignment(sigma_x, sigma_w, ridge=-1)


def test_random_basis_misalignment_exceeds_aligned_pair():
  rng = np.random.default_rng(8)
  sigma_x, sigma_w = commuting_pair(rng, 8)
  nearly = np.eye(8) + 0.01 * (lambda a: a - a.T)(rng.standard_normal((8, 8)))
  slightly_rotated = nearly @ sigma_w @ nearly.T
  baseline = alignment.random_basis_misalignment(sigma_w, seed=0, num_bases=5)
  assert baseline > 10 * alignment.misalignment(sigma_x, slightly_rotated)
  assert baseline > 1
  assert baseline == alignment.random_basis_misalignment(sigma_w, seed=0, num_bases=5)


def test_random_basis_misalignment_is_zero_for_isotropic_filters():
  # Every unit vector is an eigenvector of a multiple of the identity.
  assert alignment.random_basis_misalignment(2.5 * np.eye(6), seed=1) == pytest.approx(
      0, abs=1e-9)


def with_eigenbasis(basis, eigenvalues):
  """The symmetric matrix with these orthonormal eigenvectors (columns) and eigenvalues."""
  return basis @ np.diag(eigenvalues) @ basis.T


@pytest.mark.parametrize("seed, k", [(0, 1), (1, 3), (2, 8)])
def test_subspace_overlap_matches_scipy_principal_angles(seed, k):
  rng = np.random.default_rng(seed)
  sigma_x, sigma_w = random_spd(rng, 8), random_spd(rng, 8)
  # eigh sorts eigenvalues ascending: the top k eigenvectors are the last k columns.
  top = lambda sigma: np.linalg.eigh(sigma)[1][:, -k:]
  angles = scipy.linalg.subspace_angles(top(sigma_x), top(sigma_w))
  overlap = alignment.subspace_overlap(sigma_x, sigma_w, k)
  np.testing.assert_allclose(overlap, np.mean(np.cos(angles) ** 2), rtol=1e-9, atol=1e-12)
  assert 0 <= overlap <= 1 + 1e-12
  if k == 8:  # The whole space: every subspace is the same.
    assert overlap == pytest.approx(1)


def test_subspace_overlap_is_one_for_a_shared_top_subspace_and_zero_for_orthogonal():
  rng = np.random.default_rng(13)
  basis, k = random_rotation(rng, 7), 3
  sigma_x = with_eigenbasis(basis, np.linspace(10, 1, 7))
  assert alignment.subspace_overlap(sigma_x, sigma_x, k) == pytest.approx(1, abs=1e-12)
  # Other eigenvalues, reordered within the top 3 and within the rest: same top subspace.
  shared = with_eigenbasis(basis, [50, 90, 70, 2, 0.5, 3, 1])
  assert alignment.subspace_overlap(sigma_x, shared, k) == pytest.approx(1, abs=1e-12)
  assert alignment.misalignment(sigma_x, shared) == pytest.approx(0, abs=1e-9)
  # The same eigenvectors, the order of the eigenvalues reversed: the top 3 of one are
  # among the bottom 4 of the other.
  reversed_order = with_eigenbasis(basis, np.linspace(1, 10, 7))
  assert alignment.subspace_overlap(sigma_x, reversed_order, k) == pytest.approx(
      0, abs=1e-12)


@pytest.mark.parametrize("dim, k", [(8, 1), (8, 3), (12, 6)])
def test_random_subspaces_overlap_k_over_d_on_average(dim, k):
  rng = np.random.default_rng(dim + k)
  sigma_x = random_spd(rng, dim)
  # Sigma_w with a uniformly random top-k subspace: the first k columns of Q in the QR of
  # a Gaussian matrix span the same space as its first k columns, whose law is
  # invariant under rotations.
  overlaps = [alignment.subspace_overlap(
      sigma_x, with_eigenbasis(random_rotation(rng, dim)[:, :k], np.arange(k, 0, -1)), k)
              for _ in range(2000)]
  expected = alignment.random_subspace_overlap(dim, k)
  assert expected == k / dim
  standard_error = np.std(overlaps) / np.sqrt(len(overlaps))
  assert abs(np.mean(overlaps) - expected) < 4 * standard_error


def test_subspace_overlap_rejects_bad_k():
  sigma = random_spd(np.random.default_rng(14), 6)
  for k in (0, 7, -1, 2.0):
    with pytest.raises(ValueError, match=r"k must be in \[1, 6\]"):
      alignment.subspace_overlap(sigma, sigma, k)
    with pytest.raises(ValueError, match=r"k must be in \[1, 6\]"):
      alignment.random_subspace_overlap(6, k)
  with pytest.raises(ValueError, match="dim must be an integer >= 1"):
    alignment.random_subspace_overlap(0, 1)
  with pytest.raises(ValueError, match="sigma_x and sigma_w must have the same shape"):
    alignment.subspace_overlap(sigma, np.eye(5), 2)


def test_transfer_function_matches_numpy():
  rng = np.random.default_rng(9)
  sigma_x, sigma_w = random_spd(rng, 5), random_spd(rng, 5)
  eigenvalues, eigenvectors = np.linalg.eigh(sigma_x)
  order = np.argsort(eigenvalues)[::-1]
  expected_f = [np.sqrt(eigenvectors[:, i] @ sigma_w @ eigenvectors[:, i]) for i in order]
  sigma, f = alignment.transfer_function(sigma_x, sigma_w)
  np.testing.assert_allclose(sigma, np.sqrt(eigenvalues[order]), rtol=1e-10)
  np.testing.assert_allclose(f, expected_f, rtol=1e-10)
  assert np.all(np.diff(sigma) <= 0)


@pytest.mark.parametrize("patch_size,stride", [(3, 1), (3, 2), ((2, 3), (2, 1))])
def test_patch_covariance_matches_numpy_loops(small_images, patch_size, stride):
  pairs = [p if isinstance(p, tuple) else (p, p) for p in (patch_size, stride)]
  patches = numpy_patches(small_images, *pairs)
  expected_mean, expected_cov = patches.mean(axis=0), np.cov(patches, rowvar=False)
  batched = tf.data.Dataset.from_tensor_slices(small_images).batch(3)
  results = {
      "array in chunks of 3": alignment.patch_covariance(small_images, patch_size, stride,
                                                         chunk_size=3),
      "data set of batches": alignment.patch_covariance(batched, patch_size, stride),
      "data set of dicts": alignment.patch_covariance(
          batched.map(lambda image: {"image": image, "label": 0}), patch_size, stride),
  }
  for name, (mean, cov) in results.items():
    assert mean.dtype == cov.dtype == np.float64, name
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-6, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(cov, expected_cov, rtol=1e-5, atol=1e-7, err_msg=name)


def test_patch_covariance_is_accurate_for_a_large_mean(small_images):
  # Raw float32 products of values near 1000 would lose the 0.04 variance entirely.
  shifted = small_images + np.float32(1000)
  patches = numpy_patches(shifted, (3, 3), (1, 1))
  mean, cov = alignment.patch_covariance(shifted, 3, chunk_size=2)
  np.testing.assert_allclose(mean, patches.mean(axis=0), rtol=1e-7)
  np.testing.assert_allclose(cov, np.cov(patches, rowvar=False), rtol=1e-4, atol=1e-6)


def test_patch_covariance_of_whole_images_is_flattened_input_covariance(small_images):
  mean, cov = alignment.patch_covariance(small_images, (6, 7))
  flat = small_images.reshape(len(small_images), -1).astype(np.float64)
  np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(cov, np.cov(flat, rowvar=False), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("stride", [1, 2])
def test_patch_order_matches_keras_conv2d(structured_images, stride):
  layer = keras.layers.Conv2D(4, 3, strides=stride, padding="valid", use_bias=False)
  layer.build(structured_images.shape)
  kernel = np.random.default_rng(10).standard_normal((3, 3, 3, 4)).astype(np.float32)
  layer.kernel.assign(kernel)
  responses = np.asarray(layer(structured_images), dtype=np.float64)
  mean, cov = alignment.patch_covariance(structured_images, 3, stride)
  for j in range(4):
    w = kernel[..., j].reshape(-1).astype(np.float64)
    r = responses[..., j].reshape(-1)
    np.testing.assert_allclose(w @ mean, r.mean(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w @ cov @ w, r.var(ddof=1), rtol=1e-4)
    # The same filter flattened [c, kh, kw] (the mistake this order guards against).
    w_chw = kernel[..., j].transpose(2, 0, 1).reshape(-1).astype(np.float64)
    assert abs(w_chw @ cov @ w_chw - r.var(ddof=1)) > 0.05 * r.var(ddof=1)


def test_filter_covariance_matches_numpy():
  rng = np.random.default_rng(11)
  conv_kernel = rng.standard_normal((3, 3, 2, 5))
  filters = [conv_kernel[..., j].reshape(-1) for j in range(5)]
  np.testing.assert_allclose(alignment.filter_covariance(conv_kernel),
                             np.cov(np.array(filters), rowvar=False), rtol=1e-12)
  dense_kernel = rng.standard_normal((6, 4))
  np.testing.assert_allclose(alignment.filter_covariance(tf.constant(dense_kernel)),
                             np.cov(dense_kernel.T, rowvar=False), rtol=1e-12)


@pytest.mark.parametrize("shape", [(3, 3, 2), (3,), (2, 2, 2, 2, 2)])
def test_filter_covariance_rejects_other_ranks(shape):
  with pytest.raises(ValueError, match="kernel must have rank 4"):
    alignment.filter_covariance(np.zeros(shape))


def test_filter_covariance_needs_two_filters():
  with pytest.raises(ValueError, match="at least 2 filters"):
    alignment.filter_covariance(np.zeros((3, 3, 3, 1)))


def test_top_eigenfilters_are_leading_eigenvectors():
  sigma = random_spd(np.random.default_rng(12), 27)
  filters = alignment.top_eigenfilters(sigma, 4, (3, 3, 3))
  assert filters.shape == (4, 3, 3, 3)
  expected_values = np.sort(np.linalg.eigvalsh(sigma))[::-1][:4]
  for value, image in zip(expected_values, filters):
    v = image.reshape(-1)
    np.testing.assert_allclose(sigma @ v, value * v, atol=1e-10)
    assert np.linalg.norm(v) == pytest.approx(1)
    assert v[np.argmax(np.abs(v))] > 0


def test_top_eigenfilters_rejects_bad_arguments():
  sigma = np.eye(12)
  with pytest.raises(ValueError, match="shape must have prod"):
    alignment.top_eigenfilters(sigma, 2, (3, 3, 3))
  for k in (0, 13):
    with pytest.raises(ValueError, match=r"k must be in \[1, 12\]"):
      alignment.top_eigenfilters(sigma, k, (2, 2, 3))


@pytest.mark.parametrize("sigma_x,sigma_w,message", [
    (np.eye(3)[:2], np.eye(3), "sigma_x must be a square"),
    (np.eye(3), np.zeros((3, 3, 1)), "sigma_w must be a square"),
    (np.eye(3), np.triu(np.ones((3, 3))), "sigma_w must be symmetric"),
    (np.eye(3), np.eye(4), "sigma_x and sigma_w must have the same shape"),
    (np.full((2, 2), np.nan), np.eye(2), "sigma_x must be a non-empty matrix of finite"),
    (np.eye(2), np.zeros((2, 2)), "sigma_w must be positive definite"),
])
def test_covariance_arguments_are_validated(sigma_x, sigma_w, message):
  for function in (alignment.misalignment, alignment.transfer_function):
    if "positive definite" in message and function is alignment.transfer_function:
      continue
    with pytest.raises(ValueError, match=message):
      function(sigma_x, sigma_w)


def test_patch_covariance_rejects_bad_arguments(small_images):
  with pytest.raises(ValueError, match="patch_size must fit"):
    alignment.patch_covariance(small_images, 7)
  with pytest.raises(ValueError, match="patch_size must fit"):
    alignment.patch_covariance(tf.data.Dataset.from_tensors(small_images), (3, 8))
  with pytest.raises(ValueError, match="patch_size must be an int >= 1"):
    alignment.patch_covariance(small_images, 0)
  with pytest.raises(ValueError, match="stride must be an int >= 1"):
    alignment.patch_covariance(small_images, 3, stride=(1, 2, 3))
  with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
    alignment.patch_covariance(small_images, 3, chunk_size=0)
  with pytest.raises(ValueError, match=r"images must be \(batches of\) images"):
    alignment.patch_covariance(small_images[0], 3)
  with pytest.raises(ValueError, match="key 'image'"):
    alignment.patch_covariance(tf.data.Dataset.from_tensors({"pixels": small_images}), 3)


def test_patch_covariance_checks_patch_count_when_image_size_is_unknown(small_images):
  unknown_size = tf.data.Dataset.from_generator(
      lambda: iter([small_images]),
      output_signature=tf.TensorSpec([None, None, None, 3], tf.float32))
  with pytest.raises(ValueError, match="at least 2 patches"):
    alignment.patch_covariance(unknown_size, 7)
  # Images smaller than the patch hold no patches; the others still count.
  mixed_sizes = tf.data.Dataset.from_generator(
      lambda: iter([small_images[:2, :2], small_images]),
      output_signature=tf.TensorSpec([None, None, None, 3], tf.float32))
  expected = alignment.patch_covariance(small_images, 3)
  for result, wanted in zip(alignment.patch_covariance(mixed_sizes, 3), expected):
    np.testing.assert_allclose(result, wanted, rtol=1e-6, atol=1e-9)


def test_alignment_analysis_checks_k_and_reports_the_overlap_against_k_over_d():
  with pytest.raises(ConfigError, match=r"^--alignment_subspace_k=28 must be in \[1, 27\]"):
    alignment_analysis.check_subspace_k(28, 27)
  alignment_analysis.check_subspace_k(27, 27)
  metrics = {"layer": "conv", "dim": 27, "misalignment": 1.5,
             "misalignment_random_basis": 3.0, "subspace_k": 5, "subspace_overlap": 0.62,
             "subspace_overlap_random": 5 / 27}
  section = alignment_analysis.section(
      {"data": {"dataset": "embedded", "split": "test"},
       "models": {"scratch": {"metrics": metrics},
                  "wide": {"metrics": {"layer": "dense", "dim": 3072, "skipped": "too big"}}}},
      figures={})
  assert "top-5 subspace overlap 0.62 against 0.19 = 5/27 for a random subspace" in (
      section.summary[0])
  table = next(block for block in section.blocks if isinstance(block, report.Table))
  assert table.rows[0][-2:] == ["0.620", "0.185"]
  assert table.rows[1][-1] == "too big"


def test_transfer_experiment_checks_k_and_retrains_when_it_changes(embedded_dir):
  experiment, cfg = parse_flagfile("quick.cfg", f"--data_dir={embedded_dir}",
                                   "--alignment_subspace_k=28")
  # simple_cnn's first layer: 3x3 filters over 3 channels.
  with pytest.raises(ConfigError, match=r"^--alignment_subspace_k=28 must be in \[1, 27\]"):
    experiment.check(cfg)
  reads = {stage.name: stage.reads for stage in experiment.stages(cfg)}
  assert "alignment_subspace_k" in reads["pretrain"]
  assert "alignment_subspace_k" in reads["finetune"]
  with pytest.raises(flags.IllegalFlagValueError,
                     match="--alignment_subspace_k=0 must be >= 1"):
    parse_flagfile("quick.cfg", "--alignment_subspace_k=0")
