"""Alignment between a layer's filters and the data it sees (Maennel et al., NeurIPS 2020).

Maennel et al. show that training, even on random labels, aligns the principal components
of a first layer's weights with those of its input patches: the covariance of the filters,
Sigma_w, comes to share its eigenvectors with the covariance of the patches, Sigma_x.
This module measures that:

* `patch_covariance`: Sigma_x (and the patch mean) of images or a `tf.data.Dataset`,
  computed streaming inside a `tf.function` with plain TF ops (CPU, GPU or TPU host).
* `filter_covariance`: Sigma_w of a Keras `Conv2D` or `Dense` kernel.
* `misalignment`: the paper's score, zero exactly when Sigma_x and Sigma_w share
  eigenvectors; `random_basis_misalignment` is the same score in random bases, a baseline.
* `transfer_function`: how strongly the filters respond along each principal direction
  of the data, as a function of that direction's standard deviation.
* `top_eigenfilters`: the leading eigenvectors reshaped to filters, for display.

Flattening order: a patch is flattened as `[kh, kw, c]` (the order of
`tf.image.extract_patches`), which is the order of a Keras `Conv2D` kernel
`[kh, kw, cin, cout]` reshaped to `[kh * kw * cin, cout]`. Flattening patches as
`[c, kh, kw]` against such a kernel (a mistake in a published reproduction) compares
mismatched coordinates.

Both covariances are unbiased (divide by n - 1). The matrix functions accept numpy arrays
or eager tensors and compute in float64 numpy; they are small (d x d with d = kh * kw * c).
"""
from typing import Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

# Relative tolerance for the symmetry check of a covariance given by the caller: loose
# enough for a float32 matrix, tight enough to catch a matrix that is not a covariance.
_SYMMETRY_RTOL = 1e-5

IntOrPair = Union[int, Sequence[int]]


def _covariance_matrix(value, name: str) -> np.ndarray:
  """Returns `value` as a symmetric float64 matrix, or raises naming the argument."""
  matrix = np.asarray(value, dtype=np.float64)
  if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
    raise ValueError(f"{name} must be a square [d, d] covariance matrix, got shape "
                     f"{matrix.shape}.")
  if matrix.shape[0] == 0 or not np.all(np.isfinite(matrix)):
    raise ValueError(f"{name} must be a non-empty matrix of finite values.")
  scale = np.max(np.abs(matrix))
  if np.max(np.abs(matrix - matrix.T)) > _SYMMETRY_RTOL * scale:
    raise ValueError(f"{name} must be symmetric, got max |{name} - {name}^T| = "
                     f"{np.max(np.abs(matrix - matrix.T)):.3g} for max |{name}| = "
                     f"{scale:.3g}.")
  return (matrix + matrix.T) / 2


def _covariance_pair(sigma_x, sigma_w) -> Tuple[np.ndarray, np.ndarray]:
  """Validates two covariances of the same dimension."""
  sigma_x = _covariance_matrix(sigma_x, "sigma_x")
  sigma_w = _covariance_matrix(sigma_w, "sigma_w")
  if sigma_x.shape != sigma_w.shape:
    raise ValueError(f"sigma_x and sigma_w must have the same shape [d, d], got "
                     f"{sigma_x.shape} and {sigma_w.shape}; both must describe the "
                     "same layer input.")
  return sigma_x, sigma_w


def _descending_eigh(sigma: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Eigenvalues (descending) and unit eigenvectors (columns) of a symmetric matrix."""
  eigenvalues, eigenvectors = np.linalg.eigh(sigma)
  return eigenvalues[::-1], eigenvectors[:, ::-1]


def _regularized_eigh(sigma_w: np.ndarray, ridge: float) -> Tuple[np.ndarray, np.ndarray]:
  """Eigen-decomposition of `sigma_w + ridge * trace(sigma_w) / d * I`.

  A layer with fewer filters than input dimensions (e.g. 32 filters of 5x5x3 = 75) has a
  singular Sigma_w, whose inverse the misalignment needs. The ridge is relative to the
  mean eigenvalue, so the score does not depend on the scale of the weights.
  """
  if not ridge >= 0:
    raise ValueError(f"ridge must be >= 0, got {ridge}.")
  eigenvalues, eigenvectors = np.linalg.eigh(sigma_w)
  eigenvalues = eigenvalues + ridge * np.trace(sigma_w) / sigma_w.shape[0]
  if eigenvalues[0] <= 0:
    raise ValueError(f"sigma_w must be positive definite after the ridge, got smallest "
                     f"eigenvalue {eigenvalues[0]:.3g} with ridge={ridge}; pass ridge > 0 "
                     "for a singular sigma_w, and check the filters are not all equal.")
  return eigenvalues, eigenvectors


def _misalignment_in_basis(basis: np.ndarray, sigma_w: np.ndarray, ridge: float) -> float:
  """Sum over the columns v of `basis` of sqrt((v' S v) (v' S^-1 v)) / (v' v) - 1.

  S is the ridge-regularized `sigma_w`. Both quadratic forms are read off S's
  eigen-decomposition S = U diag(l) U' as sum_j l_j (u_j' v)^2 and sum_j (u_j' v)^2 / l_j.
  By Cauchy-Schwarz each term is >= 0, with equality iff v is an eigenvector of S; terms
  are clamped at 0 against round-off.
  """
  eigenvalues, eigenvectors = _regularized_eigh(sigma_w, ridge)
  squared_coordinates = (eigenvectors.T @ basis) ** 2
  quadratic = eigenvalues @ squared_coordinates
  inverse_quadratic = (1 / eigenvalues) @ squared_coordinates
  norms = np.sum(squared_coordinates, axis=0)
  terms = np.sqrt(quadratic * inverse_quadratic) / norms - 1
  return float(np.sum(np.maximum(terms, 0)))


def misalignment(sigma_x, sigma_w, ridge: float = 1e-6) -> float:
  """Misalignment of the filters with the data (Maennel et al., 2020, appendix).

  M(Sigma_x, Sigma_w) = sum_i [sqrt((v_i' Sigma_w v_i) (v_i' Sigma_w^-1 v_i)) - 1] over
  the unit eigenvectors v_i of Sigma_x. M >= 0, and M = 0 exactly when every eigenvector
  of Sigma_x is an eigenvector of Sigma_w. It is invariant to rescaling either matrix.

  Args:
    sigma_x: [d, d] covariance of the layer's inputs (`patch_covariance`).
    sigma_w: [d, d] covariance of the layer's filters (`filter_covariance`).
    ridge: Sigma_w is replaced by Sigma_w + ridge * trace(Sigma_w) / d * I in both
      quadratic forms, so that a singular Sigma_w (fewer filters than input dimensions)
      has an inverse; directions outside the filters' span then score high, as they
      should. 0 uses Sigma_w as is and raises if it is singular.

  Returns:
    The misalignment, a float >= 0.
  """
  sigma_x, sigma_w = _covariance_pair(sigma_x, sigma_w)
  _, eigenvectors = np.linalg.eigh(sigma_x)
  return _misalignment_in_basis(eigenvectors, sigma_w, ridge)


def _random_orthonormal_basis(dim: int, rng: np.random.Generator) -> np.ndarray:
  """A uniformly (Haar) distributed orthogonal [dim, dim] matrix; its columns are the basis.

  QR of a Gaussian matrix, with the signs of R's diagonal moved into Q so that the
  distribution is uniform rather than biased by the QR convention.
  """
  q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
  return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def random_basis_misalignment(sigma_w, seed: int, num_bases: int = 10,
                              ridge: float = 1e-6) -> float:
  """The misalignment score in random orthonormal bases instead of Sigma_x's eigenbasis.

  The baseline for `misalignment`: what the score would be if the filters' principal
  directions bore no relation to the data's.

  Args:
    sigma_w: [d, d] covariance of the layer's filters.
    seed: seed of the random bases.
    num_bases: how many random bases to average over, >= 1.
    ridge: as in `misalignment`.

  Returns:
    The mean over the bases of the misalignment score, a float >= 0.
  """
  sigma_w = _covariance_matrix(sigma_w, "sigma_w")
  if num_bases < 1:
    raise ValueError(f"num_bases must be >= 1, got {num_bases}.")
  rng = np.random.default_rng(seed)
  scores = [_misalignment_in_basis(_random_orthonormal_basis(sigma_w.shape[0], rng),
                                   sigma_w, ridge) for _ in range(num_bases)]
  return float(np.mean(scores))


def transfer_function(sigma_x, sigma_w) -> Tuple[np.ndarray, np.ndarray]:
  """How the filters respond along each principal direction of the data.

  Args:
    sigma_x: [d, d] covariance of the layer's inputs.
    sigma_w: [d, d] covariance of the layer's filters.

  Returns:
    (sigma, f), two float64 [d] arrays in descending order of the eigenvalues of sigma_x:
    sigma_i = sqrt(lambda_i), the standard deviation of the data along its i-th
    eigenvector v_i (negative round-off eigenvalues read as 0), and
    f_i = sqrt(v_i' Sigma_w v_i), the filters' spread along v_i.
  """
  sigma_x, sigma_w = _covariance_pair(sigma_x, sigma_w)
  eigenvalues, eigenvectors = _descending_eigh(sigma_x)
  response = np.einsum("ij,ik,kj->j", eigenvectors, sigma_w, eigenvectors)
  return np.sqrt(np.maximum(eigenvalues, 0)), np.sqrt(np.maximum(response, 0))


def filter_covariance(kernel) -> np.ndarray:
  """Sigma_w: the covariance across a layer's filters, one filter per output unit.

  Args:
    kernel: a Keras kernel (array, tensor or variable): [kh, kw, cin, cout] for `Conv2D`,
      whose filter j is kernel[..., j] flattened as [kh, kw, cin] (the order of
      `patch_covariance`), or [din, dout] for `Dense`, whose filter j is kernel[:, j].
      Needs at least 2 filters.

  Returns:
    float64 [d, d] covariance with d = kh * kw * cin (or din): the filters' mean is
    subtracted and the scatter divided by cout - 1, as `np.cov(..., rowvar=False)`.
  """
  kernel = np.asarray(kernel, dtype=np.float64)
  if kernel.ndim not in (2, 4):
    raise ValueError(f"kernel must have rank 4 [kh, kw, cin, cout] (Conv2D) or rank 2 "
                     f"[din, dout] (Dense), got shape {kernel.shape}.")
  filters = kernel.reshape(-1, kernel.shape[-1]).T
  if filters.shape[0] < 2:
    raise ValueError(f"kernel must have at least 2 filters (output units) for a "
                     f"covariance, got shape {kernel.shape}.")
  centered = filters - filters.mean(axis=0)
  return centered.T @ centered / (filters.shape[0] - 1)


def top_eigenfilters(sigma, k: int, shape: Sequence[int]) -> np.ndarray:
  """The top-k eigenvectors of a covariance, reshaped to filters for display.

  Args:
    sigma: [d, d] covariance, e.g. from `patch_covariance` or `filter_covariance`.
    k: how many eigenvectors, 1 <= k <= d.
    shape: filter shape with prod(shape) == d, e.g. (3, 3, 3) for [kh, kw, c].

  Returns:
    float64 [k, *shape]: the unit eigenvectors in descending order of eigenvalue, each
    signed so that its entry of largest magnitude (the first, on ties) is positive; an
    eigenvector's sign is otherwise arbitrary, which would make pictures flicker.
  """
  sigma = _covariance_matrix(sigma, "sigma")
  dim = sigma.shape[0]
  shape = tuple(int(s) for s in shape)
  if int(np.prod(shape)) != dim:
    raise ValueError(f"shape must have prod(shape) == {dim} (the size of sigma), got "
                     f"{shape}.")
  if not 1 <= k <= dim:
    raise ValueError(f"k must be in [1, {dim}], got {k}.")
  _, eigenvectors = _descending_eigh(sigma)
  top = eigenvectors[:, :k].T
  largest = top[np.arange(k), np.argmax(np.abs(top), axis=1)]
  return (top * np.where(largest < 0, -1.0, 1.0)[:, None]).reshape((k,) + shape)


def _pair(value: IntOrPair, name: str) -> Tuple[int, int]:
  """An int or a pair of ints >= 1, as (height, width)."""
  pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
  if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in pair):
    raise ValueError(f"{name} must be an int >= 1 or a pair (height, width) of them, "
                     f"got {value!r}.")
  return int(pair[0]), int(pair[1])


def _patch_extractor(patch_size: Tuple[int, int], channels: int) -> tf.Tensor:
  """A conv kernel [kh, kw, C, kh * kw * C] whose output channel m copies patch entry m.

  Convolving with this one-hot kernel is `tf.image.extract_patches` (same [kh, kw, c]
  order, same values: each output is one input times 1 plus zeros) but runs through the
  backend's convolution, several times faster on CPU than extract_patches.
  """
  dim = patch_size[0] * patch_size[1] * channels
  return tf.reshape(tf.eye(dim), [*patch_size, channels, dim])


def _batch_moments(images, extractor, stride):
  """Count, mean and scatter (sum of centered outer products) of one batch's patches.

  Products run in float32 for speed, on patches shifted by c, the batch's per-channel
  pixel mean (the bias add fuses into the convolution), so that there is no large-mean
  cancellation; in float64 the sum s of the shifted patches then gives the mean
  c + s / n and the scatter about it, S_c - s s' / n.
  """
  images = tf.cast(images, tf.float32)
  extract = lambda x: tf.nn.conv2d(x, extractor, strides=[1, *stride, 1], padding="VALID")
  image_sum = tf.reduce_sum(images, axis=0, keepdims=True)
  shift = tf.reduce_mean(image_sum, axis=[0, 1, 2]) / tf.cast(tf.shape(images)[0],
                                                               tf.float32)
  center = tf.tile(shift, [extractor.shape[0] * extractor.shape[1]])
  patches = tf.reshape(tf.nn.bias_add(extract(images), -center), [-1, extractor.shape[-1]])
  count = tf.cast(tf.shape(patches)[0], tf.float64)
  center = tf.cast(center, tf.float64)
  # Extraction is linear: the patches of the batch's sum image sum to the patch total,
  # at 1/B of the cost of summing the patches themselves.
  total = tf.reduce_sum(tf.cast(extract(image_sum), tf.float64),
                        axis=[0, 1, 2]) - count * center
  scatter = tf.cast(tf.matmul(patches, patches, transpose_a=True), tf.float64)
  safe_count = tf.maximum(count, 1)
  return (count, center + total / safe_count,
          scatter - total[:, None] * total[None, :] / safe_count)


def _merge_moments(count_a, mean_a, scatter_a, count_b, mean_b, scatter_b):
  """Moments of the union of two sets of patches (Chan et al.'s parallel update)."""
  count = count_a + count_b
  weight = count_b / tf.maximum(count, 1)
  delta = mean_b - mean_a
  return (count, mean_a + weight * delta,
          scatter_a + scatter_b + (count_a * weight) * delta[:, None] * delta[None, :])


@tf.function
def _dataset_moments(batches: tf.data.Dataset, extractor, stride):
  """Streams a data set of image batches, one batch of patches in memory at a time."""
  dim = extractor.shape[-1]
  moments = (tf.constant(0, tf.float64), tf.zeros([dim], tf.float64),
             tf.zeros([dim, dim], tf.float64))
  for images in batches:
    # Images smaller than the patch (possible when the data set's image size is not
    # static) hold no patches; the convolution would reject them.
    fits = tf.logical_and(tf.shape(images)[1] >= extractor.shape[0],
                          tf.shape(images)[2] >= extractor.shape[1])
    batch = tf.cond(fits, lambda: _batch_moments(images, extractor, stride),
                    lambda: tuple(tf.zeros_like(m) for m in moments))
    moments = _merge_moments(*moments, *batch)
  return moments


def _check_image_shape(shape: tf.TensorShape) -> None:
  if shape.rank != 4 or shape[-1] is None:
    raise ValueError(f"images must be (batches of) images [N, H, W, C] with a known C, "
                     f"got shape {shape}.")


def _image_batches(images, chunk_size: int) -> tf.data.Dataset:
  """`patch_covariance`'s input as a data set of image batches [B, H, W, C], validated."""
  if not isinstance(images, tf.data.Dataset):
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
      raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}.")
    images = tf.convert_to_tensor(images)
    _check_image_shape(images.shape)
    return tf.data.Dataset.from_tensor_slices(images).batch(chunk_size)
  if isinstance(images.element_spec, dict):
    if "image" not in images.element_spec:
      raise ValueError(f"images must be a data set of image batches or of dicts with key "
                       f"'image', got keys {sorted(images.element_spec)}.")
    images = images.map(lambda example: example["image"])
  if not isinstance(images.element_spec, tf.TensorSpec):
    raise ValueError(f"images must be a data set of image batches, got elements "
                     f"{images.element_spec}.")
  _check_image_shape(images.element_spec.shape)
  return images


def patch_covariance(images, patch_size: IntOrPair, stride: IntOrPair = 1,
                     chunk_size: int = 256) -> Tuple[np.ndarray, np.ndarray]:
  """Mean and covariance (Sigma_x) of the patches a conv layer sees, streaming.

  Each batch's patches are extracted (flattened as [kh, kw, c], as by
  `tf.image.extract_patches`, matching a Keras Conv2D kernel reshaped to [-1, cout]) and
  reduced to float64 count, mean and scatter, which are merged across batches inside a
  `tf.function`; only one batch's patches exist at a time. For a Dense first layer pass
  patch_size=(H, W): the single patch per image is the image flattened as by `Flatten`.

  Args:
    images: float images [N, H, W, C] (array or tensor), processed `chunk_size` images at
      a time; or a `tf.data.Dataset` of batches [B, H, W, C], or of dicts whose "image"
      holds such batches. Values are used as given (preprocess them as the layer sees
      them); they are cast to float32.
    patch_size: kernel size of the layer, an int or (kh, kw).
    stride: stride of the layer, an int or (sh, sw).
    chunk_size: images per batch for an array input; batches of a data set are used as
      they come.

  Returns:
    (mean, cov): float64 numpy arrays [d] and [d, d] with d = kh * kw * C; cov is the
    unbiased covariance (divided by the number of patches - 1).
  """
  patch_size = _pair(patch_size, "patch_size")
  stride = _pair(stride, "stride")
  batches = _image_batches(images, chunk_size)
  shape = batches.element_spec.shape
  for size, extent, axis in zip(patch_size, shape[1:3], ("height", "width")):
    if extent is not None and size > extent:
      raise ValueError(f"patch_size must fit in the images, got {patch_size} for image "
                       f"{axis} {extent}.")
  count, mean, scatter = _dataset_moments(
      batches, _patch_extractor(patch_size, shape[-1]), stride)
  if count < 2:
    raise ValueError(f"images must yield at least 2 patches of patch_size {patch_size}, "
                     f"got {int(count)}; check the data set is not empty and its images "
                     "are at least as large as the patches.")
  return mean.numpy(), scatter.numpy() / (count.numpy() - 1)
