"""Alignment between a layer's filters and the data it sees (Maennel et al., NeurIPS 2020).

Maennel et al. show that training, even on random labels, aligns the principal components
of a first layer's weights with those of its input patches: the covariance of the filters,
Sigma_w, comes to share its eigenvectors with the covariance of the patches, Sigma_x.
This module measures that:

* `patch_covariance`: Sigma_x (and the patch mean) of images or a `tf.data.Dataset`,
  computed streaming inside a `tf.function` of plain TF ops.
* `filter_covariance`: Sigma_w of a Keras `Conv2D` or `Dense` kernel.
* `misalignment`: the paper's score, zero exactly when Sigma_x and Sigma_w share
  eigenvectors; `random_basis_misalignment` is the same score in random bases, a baseline.
* `subspace_overlap`: how much the top-k principal subspaces of Sigma_w and Sigma_x
  share, 1 when they coincide; `random_subspace_overlap` (k/d) is its baseline.
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

# The default k of the subspace overlap: Maennel et al.'s eigenfilter figures compare the
# top few principal directions of the data and of the filters, those that carry most of
# the data's variance.
SUBSPACE_K = 5


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


def _check_k(k, dim: int) -> None:
  """Raises unless k is an integer in [1, dim]: how many leading eigenvectors to take."""
  if not (isinstance(k, (int, np.integer)) and 1 <= k <= dim):
    raise ValueError(f"k must be in [1, {dim}], got {k!r}.")


def subspace_overlap(sigma_x, sigma_w, k: int) -> float:
  """How much the top-k principal subspaces of the filters and of the data share.

  The misalignment M compares whole eigenbases and grows with every direction the filters
  mix up, however small its variance; the paper's eigenfilter figures look at the leading
  few. This asks the same of the k directions of largest variance: with U_x and U_w the
  [d, k] orthonormal top-k eigenvectors of Sigma_x and Sigma_w, it is

    ||U_x' U_w||_F^2 / k = mean over the k principal angles theta_i of cos^2(theta_i),

  1 when the two subspaces are the same (whatever the eigenvalues within them), 0 when
  they are orthogonal, and k/d in expectation for a uniformly random subspace
  (`random_subspace_overlap`). Where the k-th and (k+1)-th eigenvalues of a matrix tie,
  its top-k subspace, and so the overlap, is not unique.

  Args:
    sigma_x: [d, d] covariance of the layer's inputs (`patch_covariance`).
    sigma_w: [d, d] covariance of the layer's filters (`filter_covariance`).
    k: the subspaces' dimension, an integer in [1, d].

  Returns:
    The overlap, a float in [0, 1].
  """
  sigma_x, sigma_w = _covariance_pair(sigma_x, sigma_w)
  _check_k(k, sigma_x.shape[0])
  top_x = _descending_eigh(sigma_x)[1][:, :k]
  top_w = _descending_eigh(sigma_w)[1][:, :k]
  return float(np.sum((top_x.T @ top_w) ** 2) / k)


def random_subspace_overlap(dim: int, k: int) -> float:
  """The baseline for `subspace_overlap`: its expectation for a random subspace, k / dim.

  A closed form, not a sample: for a fixed k-dimensional subspace U and a uniformly
  (Haar) random one V, each of the k orthonormal columns of V has E||U' v||^2 = k / dim
  (by symmetry its squared coordinates in any orthonormal basis have mean 1 / dim), so
  E ||U' V||_F^2 / k = k / dim.

  Args:
    dim: d, the dimension of the space, >= 1.
    k: the subspaces' dimension, an integer in [1, d].

  Returns:
    k / dim.
  """
  if not (isinstance(dim, (int, np.integer)) and dim >= 1):
    raise ValueError(f"dim must be an integer >= 1, got {dim!r}.")
  _check_k(k, dim)
  return k / dim


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
  _check_k(k, dim)
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


def _row_extractor(patch_width: int, channels: int) -> tf.Tensor:
  """A one-hot conv kernel [1, kw, C, kw * C] whose output channel m copies entry m of a
  1 x kw patch, flattened [kw, c]: `tf.image.extract_patches` as a convolution, exact
  (each output is one input times 1 plus zeros) and run by every backend."""
  width = patch_width * channels
  return tf.reshape(tf.eye(width), [1, patch_width, channels, width])


def _batch_moments(images, patch_size, stride):
  """Count, mean and scatter (sum of centered outer products) of one batch's patches.

  A k x k patch is k row patches (1 x k) stacked, and neighbouring patches share rows,
  so the scatter is assembled from products of row patches: with Y_u the row patches
  of image row u, the block (a, a + lag) of the scatter is the sum over patch rows i
  of Y_{i s + a}' Y_{i s + a + lag}. One batched matmul per lag gives these for every u,
  at 1/k of the cost of multiplying the full patches (and without materializing them).

  Products run in float32 for speed, on values shifted by c, the batch's per-channel
  pixel mean (the bias add fuses into the convolution), so that there is no large-mean
  cancellation; in float64 the sum s of the shifted patches then gives the mean
  c + s / n and the scatter about it, S_c - s s' / n.
  """
  (patch_height, patch_width), (row_stride, column_stride) = patch_size, stride
  channels = images.shape[-1]
  width = patch_width * channels
  # Image rows lead, so that one batched matmul pairs every row u with row u + lag.
  rows = tf.transpose(tf.cast(images, tf.float32), [1, 0, 2, 3])
  height, num_images = tf.shape(rows)[0], tf.shape(rows)[1]
  row_sum = tf.reduce_sum(rows, axis=1, keepdims=True)
  shift = tf.reduce_mean(row_sum, axis=[0, 1, 2]) / tf.cast(num_images, tf.float32)
  extractor = _row_extractor(patch_width, channels)
  extract = lambda x: tf.nn.conv2d(x, extractor, strides=[1, 1, column_stride, 1],
                                   padding="VALID")
  row_patches = tf.nn.bias_add(extract(rows), -tf.tile(shift, [patch_width]))
  patches_per_row = tf.shape(row_patches)[2]
  row_patches = tf.reshape(row_patches, [height, -1, width])
  first_rows = tf.range((height - patch_height) // row_stride + 1) * row_stride

  def sum_over_patch_rows(per_row, offsets):
    """[len(offsets), ...]: the sum over patch rows i of per_row[i * stride + offset]."""
    return tf.reduce_sum(tf.gather(per_row, first_rows[None, :] + offsets[:, None]), 1)

  blocks, block_indices = [], []
  for lag in range(patch_height):
    products = tf.cast(tf.matmul(row_patches[:height - lag], row_patches[lag:],
                                 transpose_a=True), tf.float64)
    block = sum_over_patch_rows(products, tf.range(patch_height - lag))
    blocks.append(block)
    block_indices += [(a, a + lag) for a in range(patch_height - lag)]
    if lag:
      blocks.append(tf.transpose(block, [0, 2, 1]))
      block_indices += [(a + lag, a) for a in range(patch_height - lag)]
  dim = patch_height * width
  scatter = tf.scatter_nd(tf.constant(block_indices), tf.concat(blocks, axis=0),
                          [patch_height, patch_height, width, width])
  scatter = tf.reshape(tf.transpose(scatter, [0, 2, 1, 3]), [dim, dim])

  count = tf.cast(tf.size(first_rows) * num_images * patches_per_row, tf.float64)
  center = tf.tile(tf.cast(shift, tf.float64), [patch_height * patch_width])
  # Extraction is linear: the patches of the batch's sum image sum to the patch total,
  # at 1/N of the cost of summing the patches themselves.
  row_totals = tf.reduce_sum(tf.cast(extract(row_sum), tf.float64), axis=[1, 2])
  total = tf.reshape(sum_over_patch_rows(row_totals, tf.range(patch_height)),
                     [dim]) - count * center
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


def _zero_moments(dim: int):
  """Count, mean and scatter of no patches."""
  return (tf.constant(0, tf.float64), tf.zeros([dim], tf.float64),
          tf.zeros([dim, dim], tf.float64))


def _add_batch(moments, images, patch_size, stride):
  """`moments` updated with the patches of a batch of images [B, H, W, C]."""
  # Images smaller than the patch (possible when a data set's image size is not static)
  # hold no patches; the convolution would reject them.
  fits = tf.logical_and(tf.shape(images)[1] >= patch_size[0],
                        tf.shape(images)[2] >= patch_size[1])
  batch = tf.cond(fits, lambda: _batch_moments(images, patch_size, stride),
                  lambda: tuple(tf.zeros_like(m) for m in moments))
  return _merge_moments(*moments, *batch)


@tf.function
def _dataset_moments(batches: tf.data.Dataset, patch_size, stride):
  """Streams a data set of image batches, one batch in memory at a time."""
  moments = _zero_moments(patch_size[0] * patch_size[1] * batches.element_spec.shape[-1])
  for images in batches:
    moments = _add_batch(moments, images, patch_size, stride)
  return moments


@tf.function
def _tensor_moments(images: tf.Tensor, patch_size, stride, chunk_size: int):
  """Goes through images [N, H, W, C] chunk_size at a time; slicing in the graph is
  several times faster than a `tf.data` pipeline over the same tensor."""
  moments = _zero_moments(patch_size[0] * patch_size[1] * images.shape[-1])
  for start in tf.range(0, tf.shape(images)[0], chunk_size):
    moments = _add_batch(moments, images[start:start + chunk_size], patch_size, stride)
  return moments


def _check_image_shape(shape: tf.TensorShape, patch_size: Tuple[int, int]) -> None:
  """Raises unless `shape` is [N, H, W, C] with a known C and room for the patch."""
  if shape.rank != 4 or shape[-1] is None:
    raise ValueError(f"images must be (batches of) images [N, H, W, C] with a known C, "
                     f"got shape {shape}.")
  for size, extent, axis in zip(patch_size, shape[1:3], ("height", "width")):
    if extent is not None and size > extent:
      raise ValueError(f"patch_size must fit in the images, got {patch_size} for image "
                       f"{axis} {extent}.")


def _image_batches(images: tf.data.Dataset,
                   patch_size: Tuple[int, int]) -> tf.data.Dataset:
  """A data set of image batches or of dicts with "image" as image batches, validated."""
  if isinstance(images.element_spec, dict):
    if "image" not in images.element_spec:
      raise ValueError(f"images must be a data set of image batches or of dicts with key "
                       f"'image', got keys {sorted(images.element_spec)}.")
    images = images.map(lambda example: example["image"])
  if not isinstance(images.element_spec, tf.TensorSpec):
    raise ValueError(f"images must be a data set of image batches, got elements "
                     f"{images.element_spec}.")
  _check_image_shape(images.element_spec.shape, patch_size)
  return images


def patch_covariance(images, patch_size: IntOrPair, stride: IntOrPair = 1,
                     chunk_size: int = 512) -> Tuple[np.ndarray, np.ndarray]:
  """Mean and covariance (Sigma_x) of the patches a conv layer sees, streaming.

  Patches are the layer's receptive fields (padding "VALID"), flattened [kh, kw, c] as by
  `tf.image.extract_patches`, the order of a Keras Conv2D kernel reshaped to [-1, cout].
  Each batch is reduced to its patches' count, mean and scatter (products in float32 on
  mean-shifted values, without materializing the patches), and these are merged across
  batches in float64 inside a `tf.function` of plain TF ops; one batch is in memory at a
  time. For a Dense first layer pass patch_size=(H, W): the single patch of an image is
  the image flattened as by `Flatten`.

  Args:
    images: float images [N, H, W, C] (array or tensor, held whole by the device that
      runs the function), processed `chunk_size` images at a time; or, for more data
      than that, a `tf.data.Dataset` of batches [B, H, W, C] or of dicts whose "image"
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
  if isinstance(images, tf.data.Dataset):
    count, mean, scatter = _dataset_moments(_image_batches(images, patch_size),
                                            patch_size, stride)
  else:
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
      raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}.")
    images = tf.convert_to_tensor(images)
    _check_image_shape(images.shape, patch_size)
    count, mean, scatter = _tensor_moments(images, patch_size, stride, int(chunk_size))
  if count < 2:
    raise ValueError(f"images must yield at least 2 patches of patch_size {patch_size}, "
                     f"got {int(count)}; check the data set is not empty and its images "
                     "are at least as large as the patches.")
  return mean.numpy(), scatter.numpy() / (count.numpy() - 1)
