"""Input-space geometry of a feature map (Zavatone-Veth et al., 2023).

Zavatone-Veth, Yang, Rubinfien and Pehlevan, "Neural networks learn to magnify areas
near decision boundaries" (NeurIPS 2023), study the metric that a feature map phi pulls
back onto input space,

  g(x) = J(x)^T J(x) / n,   J(x) = d phi(x) / d x  (an [n, d] matrix),

with n the feature width and d the input dimension. sqrt(det g) is the volume element:
how much phi stretches a small input volume at x. Training magnifies volumes near the
decision boundaries, where predictions are uncertain. This module measures that:

* `feature_jacobian`, `pullback_metric`: J and g at a batch of inputs.
* `plane_metric`: g restricted to a 2-D plane through input space (two Jacobian-vector
  products, no full Jacobian), and `plane_through`: the plane through three images.
* `log10_volume`: log10 of the volume element from the singular values of J, and
  `volume_element_2d`: the volume element itself for 2-D inputs.
* `prediction_entropy` and `magnification`: how volume and prediction entropy relate.
* `erf_network_metric`, `erf_network_volume`: the closed-form metric of an infinitely
  wide one-hidden-layer erf network at initialization, a reference for the estimates.

The feature map: `feature_fn` is any callable from a float batch [B, ...input shape] to
features [B, n]. Following the paper it is the output of the last hidden layer, after its
activation, in inference mode (`lambda x: features_model(x, training=False)`) - never the
logits. It must treat the examples of a batch independently (inference-mode batch
normalization does; training-mode does not), since the Jacobians are taken per example.
Inputs are flattened in row-major order, so d = prod(input shape) and column i of J is
the i-th entry of `tf.reshape(x, [B, -1])`.

Return types: `feature_jacobian`, `pullback_metric` and `plane_metric` return tensors in
the input's float dtype; the volume and summary functions compute in float64 numpy and
return numpy arrays or plain Python floats.
"""
import math
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf
from scipy import special

FeatureFn = Callable[[tf.Tensor], tf.Tensor]

# Fractions of points, sorted by entropy, that `magnification` compares: the most
# uncertain 10% (near the decision boundaries) against the most certain 50%.
_HIGH_ENTROPY_FRACTION = 0.1
_LOW_ENTROPY_FRACTION = 0.5
# The fewest points `magnification` accepts: enough for the high-entropy group to hold
# one point.
_MIN_MAGNIFICATION_POINTS = 10
# Tolerance on sum(p) = 1 in `prediction_entropy`: loose enough for a float32 softmax,
# tight enough to catch logits or unnormalized scores.
_PROBABILITY_SUM_ATOL = 1e-3


def _float_tensor(value, name: str) -> tf.Tensor:
  """`value` as a float tensor with a batch axis (integers become float32)."""
  tensor = tf.convert_to_tensor(value)
  if not tensor.dtype.is_floating:
    tensor = tf.cast(tensor, tf.float32)
  if tensor.shape.rank is None or tensor.shape.rank < 2 or tensor.shape[0] == 0:
    raise ValueError(f"{name} must be a non-empty batch [B, ...input shape] (rank >= 2), "
                     f"got shape {tensor.shape}; add a leading batch axis to a single input.")
  return tensor


def _features(feature_fn: FeatureFn, x: tf.Tensor) -> tf.Tensor:
  """phi(x), checked to be a [B, n] batch of feature vectors."""
  features = feature_fn(x)
  if features.shape.rank != 2 or features.shape[0] != x.shape[0]:
    raise ValueError(f"feature_fn must map a batch of {x.shape[0]} inputs to features "
                     f"[{x.shape[0]}, n], got shape {features.shape}; flatten the last "
                     "hidden layer's output (e.g. with keras.layers.Flatten).")
  return features


def _jvp(feature_fn: FeatureFn, x: tf.Tensor, tangent: tf.Tensor) -> tf.Tensor:
  """J(x) @ tangent for each input of the batch, by one forward-mode pass: [B, n]."""
  with tf.autodiff.ForwardAccumulator(x, tangent) as accumulator:
    features = _features(feature_fn, x)
  return accumulator.jvp(features, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def _copies(x: tf.Tensor, count: int) -> tf.Tensor:
  """`count` copies of the batch x, stacked: row k * B + b is example b."""
  return tf.tile(x, [count] + [1] * (x.shape.rank - 1))


def _unit_vectors(start: int, stop: int, size: int, batch: int, dtype,
                  shape) -> tf.Tensor:
  """e_start, ..., e_{stop-1} in R^size, each repeated B times, reshaped to [-1, *shape].

  Row k * B + b holds e_{start + k}, matching `_copies`.
  """
  directions = tf.one_hot(tf.range(start, stop), size, dtype=dtype)
  return tf.reshape(tf.repeat(directions, batch, axis=0), [-1, *shape])


def _reverse_jacobian(feature_fn: FeatureFn, x: tf.Tensor, width: int,
                      step: int) -> tf.Tensor:
  """[B, n, d] Jacobians by reverse mode: one forward pass over the batch, kept on a
  persistent tape, then one backward pass per feature j (cotangent e_j at every
  example), at most `step` of them at a time."""
  batch = x.shape[0]
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    features = _features(feature_fn, x)

  def row(j):
    cotangents = tf.one_hot(tf.fill([batch], j), width, dtype=features.dtype)
    products = tape.gradient(features, x, output_gradients=cotangents,
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return tf.reshape(products, [batch, -1])

  rows = tf.map_fn(row, tf.range(width), parallel_iterations=step,
                   fn_output_signature=tf.TensorSpec([batch, math.prod(x.shape[1:])], x.dtype))
  return tf.transpose(rows, [1, 0, 2])


def _forward_jacobian(feature_fn: FeatureFn, x: tf.Tensor, step: int) -> tf.Tensor:
  """[B, n, d] Jacobians by forward mode, `step` columns (input directions) per pass."""
  batch, dim = x.shape[0], math.prod(x.shape[1:])
  columns = []
  for start in range(0, dim, step):
    stop = min(start + step, dim)
    tangents = _unit_vectors(start, stop, dim, batch, x.dtype, x.shape[1:])
    products = _jvp(feature_fn, _copies(x, stop - start), tangents)
    columns.append(tf.transpose(tf.reshape(products, [stop - start, batch, -1]), [1, 2, 0]))
  return tf.concat(columns, axis=2)


def feature_jacobian(feature_fn: FeatureFn, x, chunk_size: Optional[int] = None) -> tf.Tensor:
  """The Jacobian of the feature map at each input of a batch.

  * d >= n (images: thousands of pixels, hundreds of features): reverse mode. One
    forward pass over the batch is recorded, then each row j is one backward pass with
    cotangent e_j at every input; chunk_size of these run at a time.
  * d < n (low-dimensional inputs, wide features, e.g. 2-D toy tasks): forward mode
    (`tf.autodiff.ForwardAccumulator`). A pass evaluates feature_fn on chunk_size stacked
    copies of the batch, copy k carrying tangent e_k, so it computes chunk_size columns.

  A row costs about one backward pass and a column one forward pass, so reverse mode
  needs n passes and forward mode d; the mode with fewer is used. A width-20000 erf
  layer on 3-D inputs takes milliseconds in forward mode and minutes in reverse mode.
  Reverse mode shares its forward pass among all rows: computing rows on stacked copies
  of the batch instead repeats the forward pass for every row and, traced, took 1.8 times
  as long on bench/volume_element.py's plane (2 CPU cores). `tf.GradientTape.batch_jacobian` vectorizes the rows
  with pfor, which retraces a function on every call (about 0.5 s per chunk on a CPU).

  Args:
    feature_fn: maps a float batch [B, ...input shape] to features [B, n]; see the
      module docstring.
    x: [B, ...input shape] inputs; integers are cast to float32.
    chunk_size: Jacobian rows (features, reverse mode) or columns (input directions,
      forward mode) computed at a time; either holds about chunk_size * B examples'
      activations, so a smaller chunk bounds the memory at the cost of parallelism. None
      computes all of them at once, which for large n or d can exhaust memory.

  Returns:
    J: [B, n, d] tensor in x's float dtype, d = prod(input shape); J[b, j, i] is the
    derivative of feature j at input b with respect to the i-th flattened input entry.
  """
  x = _float_tensor(x, "x")
  if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(
      chunk_size, int) or chunk_size < 1):
    raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}.")
  width, dim = _features(feature_fn, x).shape[1], math.prod(x.shape[1:])
  if dim < width:
    return _forward_jacobian(feature_fn, x, chunk_size or dim)
  jacobian = _reverse_jacobian(feature_fn, x, width, chunk_size or width)
  return tf.reshape(jacobian, [x.shape[0], width, dim])


def pullback_metric(jacobian, width: Optional[int] = None) -> tf.Tensor:
  """The metric g = J^T J / n that the feature map pulls back onto input space.

  Args:
    jacobian: [B, n, d] Jacobians, e.g. from `feature_jacobian`.
    width: the n to divide by; None uses the number of rows of `jacobian`. Pass the full
      width when `jacobian` holds only some of the features.

  Returns:
    g: [B, d, d] symmetric positive semi-definite tensor in the Jacobian's dtype.
  """
  jacobian = tf.convert_to_tensor(jacobian)
  if jacobian.shape.rank != 3:
    raise ValueError(f"jacobian must have shape [B, n, d], got {jacobian.shape}.")
  width = jacobian.shape[1] if width is None else width
  if not width > 0:
    raise ValueError(f"width must be > 0, got {width}.")
  return tf.einsum("bni,bnj->bij", jacobian, jacobian) / tf.cast(width, jacobian.dtype)


def _plane_direction(direction, x: tf.Tensor, name: str) -> tf.Tensor:
  """`direction` (one input's shape, or x's shape) broadcast to x's shape and dtype."""
  direction = tf.cast(tf.convert_to_tensor(direction), x.dtype)
  if direction.shape not in (x.shape, x.shape[1:]):
    raise ValueError(f"{name} must have one input's shape {x.shape[1:]} (or x's shape "
                     f"{x.shape}), got {direction.shape}.")
  return tf.broadcast_to(direction, tf.shape(x))


def plane_metric(feature_fn: FeatureFn, x, u, v) -> tf.Tensor:
  """The metric restricted to the plane spanned by u and v: G = (J U)^T (J U) / n.

  U = [u, v] is the [d, 2] matrix of the plane's directions (flattened). J U comes from
  two Jacobian-vector products (forward mode), so the full [n, d] Jacobian is never
  formed. For points c + a * u + b * v of a plane (see `plane_through`), G is the metric
  in the plane's coordinates (a, b) and sqrt(det G) its area element.

  Args:
    feature_fn: maps a float batch [B, ...input shape] to features [B, n].
    x: [B, ...input shape] points.
    u: the first direction, with one input's shape (the same for every point) or x's
      shape (one direction per point).
    v: the second direction, shaped like u.

  Returns:
    G: [B, 2, 2] tensor in x's float dtype, G[b] = U^T g(x_b) U.
  """
  x = _float_tensor(x, "x")
  ju = _jvp(feature_fn, x, _plane_direction(u, x, "u"))
  jv = _jvp(feature_fn, x, _plane_direction(v, x, "v"))
  ju_jv = tf.stack([ju, jv], axis=-1)
  return tf.einsum("bni,bnj->bij", ju_jv, ju_jv) / tf.cast(ju.shape[1], x.dtype)


def _square_factor(matrices: np.ndarray) -> np.ndarray:
  """A [B, m, m] factor R with the singular values of [B, n, d] matrices, m = min(n, d).

  R is the triangular factor of the QR decomposition of the tall orientation (A = Q R
  for n >= d, A^T = Q R otherwise); Q has orthonormal columns, so A and R share their
  singular values. Householder QR is backward stable, so they come out as accurately as
  from an SVD of A, and several times faster for n << d (numpy's batched SVD of a wide
  matrix is slow).
  """
  tall = matrices if matrices.shape[1] >= matrices.shape[2] else np.swapaxes(matrices, 1, 2)
  return np.linalg.qr(tall, mode="r")


def _singular_values(jacobian: np.ndarray) -> np.ndarray:
  """Singular values [B, m] of [B, n, d] matrices, descending, in float64.

  A float64 Jacobian goes through QR (`_square_factor`), accurate down to float64
  rounding. A float32 (or coarser) Jacobian goes through the eigenvalues of its
  m x m Gram matrix, formed in float64: about 1 ms a point for a 64 x 3072 Jacobian
  against 10 to 25 ms for QR. Squaring costs accuracy only below s_max * sqrt(m * eps64),
  at least 8 times under the zero tolerance for float32 entries (s_max * max(n, d) *
  eps32, see `log10_volume`); above it the Gram's eigenvalues carry float64 relative
  accuracy, finer than the Jacobian's own float32 rounding.
  """
  matrices = jacobian.astype(np.float64)
  if np.finfo(jacobian.dtype).eps > np.finfo(np.float64).eps:
    wide = matrices if matrices.shape[1] <= matrices.shape[2] else np.swapaxes(matrices, 1, 2)
    eigenvalues = np.linalg.eigvalsh(wide @ np.swapaxes(wide, 1, 2))[:, ::-1]
    return np.sqrt(np.maximum(eigenvalues, 0.0))
  return np.linalg.svd(_square_factor(matrices), compute_uv=False)


def log10_volume(jacobian, k: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
  """log10 of the volume element, from the singular values of J / sqrt(n).

  The singular values s_i of J / sqrt(n) are the square roots of the eigenvalues of g,
  so with k = d <= n, sum_i log10 s_i = log10 sqrt(det g). When n < d, g has rank at most
  n and det g = 0; the top-k sum is then the log volume of the k-dimensional subspace
  the features stretch most. The sum is taken in float64 over the logs of the singular
  values, never as the log of their product, which under- or overflows for large k.

  Zero singular values: s_i <= max_i(s_i) * max(n, d) * eps, with eps the machine
  epsilon of the Jacobian's dtype (numpy's `matrix_rank` tolerance; smaller values are
  rounding noise), counts as zero. Such values are left out of the sum and counted in
  `num_zero` instead of contributing -inf: the log volume is then that of the subspace
  where J has rank, and `num_zero > 0` flags that the full k-volume is zero. An all-zero
  Jacobian gives log volume 0 (an empty sum) with num_zero = k.

  Args:
    jacobian: [B, n, d] Jacobians, e.g. from `feature_jacobian`.
    k: how many of the largest singular values to use, 1 <= k <= min(n, d); None uses
      all min(n, d).

  Returns:
    (log10_volume, num_zero): float64 [B] sums of log10 s_i over the top k nonzero
    singular values, and int64 [B] counts of zero singular values among the top k.
  """
  jacobian = np.asarray(jacobian)
  if jacobian.ndim != 3 or 0 in jacobian.shape:
    raise ValueError(f"jacobian must have shape [B, n, d] with no empty axis, got "
                     f"{jacobian.shape}.")
  width, dim = jacobian.shape[1:]
  rank_bound = min(width, dim)
  k = rank_bound if k is None else k
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= rank_bound:
    raise ValueError(f"k must be an int in [1, min(n, d)] = [1, {rank_bound}] or None, got "
                     f"{k!r}.")
  if jacobian.dtype.kind != "f":
    jacobian = jacobian.astype(np.float64)
  eps = np.finfo(jacobian.dtype).eps
  singular_values = _singular_values(jacobian)
  singular_values /= math.sqrt(width)
  tolerance = singular_values[:, :1] * max(width, dim) * eps
  top = singular_values[:, :k]
  nonzero = top > tolerance
  logs = np.log10(np.where(nonzero, top, 1.0))
  return logs.sum(axis=1), np.sum(~nonzero, axis=1).astype(np.int64)


def volume_element_2d(feature_fn: FeatureFn, x) -> np.ndarray:
  """The volume (area) element sqrt(det g) at 2-D inputs, exactly.

  With J = Q R (thin QR, R upper triangular 2x2), J^T J = R^T R, so
  sqrt(det g) = sqrt(det(J^T J)) / n = |R_00 R_11| / n. Unlike det g = g_00 g_11 - g_01^2,
  this does not cancel catastrophically where g is nearly singular, and it is never
  negative.

  Args:
    feature_fn: maps a float batch [B, 2] to features [B, n].
    x: [B, 2] inputs.

  Returns:
    float64 [B] volume elements.
  """
  x = _float_tensor(x, "x")
  if x.shape.rank != 2 or x.shape[1] != 2:
    raise ValueError(f"volume_element_2d needs 2-D inputs [B, 2], got shape {x.shape}; "
                     "use log10_volume(feature_jacobian(...)) for other inputs.")
  jacobian = feature_jacobian(feature_fn, x).numpy().astype(np.float64)
  if jacobian.shape[1] < 2:
    return np.zeros(jacobian.shape[0])  # One feature: J has rank <= 1, so det g = 0.
  r = np.linalg.qr(jacobian, mode="r")
  return np.abs(r[:, 0, 0] * r[:, 1, 1]) / jacobian.shape[1]


def plane_through(x1, x2, x3, resolution: int = 80, extent: float = 1.0):
  """A grid over the plane through three inputs (e.g. three images).

  The plane is parameterized as

    point(a, b) = c + a * u + b * v,
    c = (x1 + x2 + x3) / 3,  u = x2 - x1,  v = 2 * sqrt(3) * ((x1 + x2) / 2 - c),

  with (a, b) on a resolution x resolution grid over [-extent, extent]^2. Since
  (x1 + x2) / 2 - c = (x1 + x2 - 2 x3) / 6, the three inputs sit at
  x1 = (-1/2, 1 / (2 sqrt 3)), x2 = (1/2, 1 / (2 sqrt 3)), x3 = (0, -1 / sqrt 3): the
  vertices of an equilateral triangle of side 1 centred on the origin, whatever the
  inputs. The default extent of 1 holds all three with a margin.

  Args:
    x1: one input, shape [...input shape] (no batch axis).
    x2: a second input, same shape.
    x3: a third input, same shape, not on the line through x1 and x2.
    resolution: R, grid points per axis (>= 2).
    extent: half the side of the square grid in plane coordinates (> 0).

  Returns:
    (points, coords, origin, u, v): points [R*R, ...input shape]; coords [R*R, 2] float64,
    the (a, b) of each point, ordered so that a reshape to [R, R] puts b (increasing) on
    the rows and a (increasing) on the columns (`imshow(..., origin="lower")` shows the
    plane upright); origin c, u and v with the input's shape. points, origin, u and v
    are numpy arrays of the inputs' float dtype (float32 for integer inputs).
  """
  x1, x2, x3 = (np.asarray(value) for value in (x1, x2, x3))
  if not x1.shape == x2.shape == x3.shape or x1.size == 0:
    raise ValueError(f"x1, x2 and x3 must be three inputs of the same non-empty shape, got "
                     f"{x1.shape}, {x2.shape} and {x3.shape}.")
  if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
    raise ValueError(f"resolution must be an int >= 2, got {resolution!r}.")
  if not extent > 0:
    raise ValueError(f"extent must be > 0, got {extent}.")
  dtype = np.result_type(x1, x2, x3)
  dtype = dtype if np.issubdtype(dtype, np.floating) else np.float32
  x1, x2, x3 = (value.astype(np.float64) for value in (x1, x2, x3))
  origin = (x1 + x2 + x3) / 3
  u = x2 - x1
  v = 2 * math.sqrt(3) * ((x1 + x2) / 2 - origin)
  # Rank at the inputs' precision: rounding can lift collinear float32 inputs off a line.
  if np.linalg.matrix_rank(np.stack([u.ravel(), v.ravel()]).astype(dtype)) < 2:
    raise ValueError("x1, x2 and x3 lie on one line (or coincide), so they span no plane; "
                     "pick three distinct, non-collinear inputs.")
  axis = np.linspace(-extent, extent, resolution)
  b_grid, a_grid = np.meshgrid(axis, axis, indexing="ij")
  coords = np.stack([a_grid.ravel(), b_grid.ravel()], axis=1)
  points = origin + np.multiply.outer(coords[:, 0], u) + np.multiply.outer(coords[:, 1], v)
  return (points.astype(dtype), coords, origin.astype(dtype), u.astype(dtype),
          v.astype(dtype))


def prediction_entropy(probabilities) -> np.ndarray:
  """Entropy of each predicted distribution in base 10: -sum_c p_c log10 p_c.

  0 log 0 is taken as 0. The range is [0, log10 C] for C classes.

  Args:
    probabilities: [..., C] class probabilities (a softmax output), each row summing
      to 1.

  Returns:
    float64 [...] entropies, one per point.
  """
  probabilities = np.asarray(probabilities, dtype=np.float64)
  if probabilities.ndim < 1 or probabilities.shape[-1] == 0:
    raise ValueError(f"probabilities must have shape [..., C] with C >= 1, got "
                     f"{probabilities.shape}.")
  if (np.any(probabilities < 0) or not np.all(np.isfinite(probabilities))
      or not np.allclose(probabilities.sum(axis=-1), 1.0, rtol=0, atol=_PROBABILITY_SUM_ATOL)):
    raise ValueError("probabilities must be non-negative and sum to 1 over the last axis; "
                     "apply tf.nn.softmax to logits first.")
  return -np.sum(special.xlogy(probabilities, probabilities), axis=-1) / math.log(10)


def _log10_mean_power(log10_values: np.ndarray) -> float:
  """log10 of mean(10 ** log10_values), by log-sum-exp so no power over- or underflows."""
  return (special.logsumexp(log10_values * math.log(10)) / math.log(10)
          - math.log10(log10_values.size))


def _average_ranks(values: np.ndarray) -> np.ndarray:
  """Ranks 1..N of a flat array, tied values sharing their mean rank (as Spearman's
  correlation needs). numpy, not scipy.stats: importing that costs every run a second."""
  _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
  last = np.cumsum(counts)
  return ((last - counts + 1 + last) / 2)[group.reshape(-1)]


def magnification(log10_volume, entropy) -> dict:
  """How much the feature map magnifies volume where predictions are uncertain.

  Args:
    log10_volume: [N] log10 volume elements at N points (e.g. a grid over a plane), from
      `log10_volume` or log10 of `volume_element_2d`.
    entropy: [N] prediction entropies at the same points, from `prediction_entropy`.

  Returns:
    A dict of plain floats:
      "rank_correlation": Spearman rank correlation between log volume and entropy
        (ties get average ranks); nan when either is constant.
      "volume_ratio": mean volume element (10 ** log volume) over the highest-entropy
        10% of points divided by the mean over the lowest-entropy 50%. Both means are
        taken by log-sum-exp, so large log volumes do not overflow; the ratio itself
        becomes inf if it exceeds the float range.
      "log10_volume_ratio": log10 of that ratio, finite whenever the inputs are.
    The groups hold N // 10 and N // 2 points, after a stable sort by entropy.
  """
  log10_volume = np.asarray(log10_volume, dtype=np.float64)
  entropy = np.asarray(entropy, dtype=np.float64)
  if log10_volume.ndim != 1 or log10_volume.shape != entropy.shape:
    raise ValueError(f"log10_volume and entropy must be 1-D arrays of the same length (one "
                     f"value per point), got shapes {log10_volume.shape} and "
                     f"{entropy.shape}.")
  if log10_volume.size < _MIN_MAGNIFICATION_POINTS:
    raise ValueError(f"magnification needs at least {_MIN_MAGNIFICATION_POINTS} points (so "
                     f"the highest-entropy 10% holds one), got {log10_volume.size}; use a "
                     "finer grid.")
  if not (np.all(np.isfinite(log10_volume)) and np.all(np.isfinite(entropy))):
    raise ValueError("log10_volume and entropy must be finite; log10_volume from "
                     "`log10_volume` always is.")
  volume_ranks = _average_ranks(log10_volume)
  entropy_ranks = _average_ranks(entropy)
  if np.ptp(volume_ranks) == 0 or np.ptp(entropy_ranks) == 0:
    rank_correlation = float("nan")
  else:
    rank_correlation = float(np.corrcoef(volume_ranks, entropy_ranks)[0, 1])
  order = np.argsort(entropy, kind="stable")
  size = log10_volume.size
  high = log10_volume[order[size - int(size * _HIGH_ENTROPY_FRACTION):]]
  low = log10_volume[order[:int(size * _LOW_ENTROPY_FRACTION)]]
  log10_ratio = float(_log10_mean_power(high) - _log10_mean_power(low))
  with np.errstate(over="ignore"):
    volume_ratio = float(np.power(10.0, log10_ratio))
  return {"rank_correlation": rank_correlation, "volume_ratio": volume_ratio,
          "log10_volume_ratio": log10_ratio}


def _erf_network_inputs(x, sigma_w: float, sigma_b: float) -> np.ndarray:
  """x as validated [B, d] float64 inputs, after checking the prior scales."""
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 2 or 0 in x.shape:
    raise ValueError(f"x must be a non-empty batch of vectors [B, d], got shape {x.shape}.")
  if not sigma_w > 0 or not sigma_b >= 0:
    raise ValueError(f"need sigma_w > 0 and sigma_b >= 0, got sigma_w={sigma_w}, "
                     f"sigma_b={sigma_b}.")
  return x


def erf_network_metric(x, sigma_w: float, sigma_b: float) -> np.ndarray:
  """The metric of an infinitely wide one-hidden-layer erf network at initialization.

  Features phi_j(x) = erf(w_j . x + b_j), w_j ~ N(0, sigma_w^2 I_d), b_j ~ N(0, sigma_b^2),
  all independent. sigma_w is the standard deviation of each weight, with no 1/d
  scaling (for the common sigma_w^2 / d convention pass sigma_w / sqrt(d)). Row j of J is
  erf'(z_j) w_j with z_j = w_j . x + b_j, so g = J^T J / n averages n independent terms
  and tends to

    g(x) = E[erf'(z)^2 w w^T]
         = (4 / pi) (1 + 4 q)^(-1/2) [sigma_w^2 I - 4 sigma_w^4 x x^T / (1 + 4 q)],
    q = sigma_w^2 |x|^2 + sigma_b^2  (the variance of z).

  Derivation: erf'(z)^2 = (4 / pi) exp(-2 z^2). Write theta = (w, b) ~ N(0, C), with
  C = diag(sigma_w^2 I_d, sigma_b^2), and y = (x, 1), so z = theta . y. Multiplying the
  Gaussian density by exp(-2 (theta . y)^2) gives an unnormalized Gaussian with precision
  C^-1 + 4 y y^T; its mass relative to N(0, C) is E[exp(-2 z^2)] = (1 + 4 q)^(-1/2)
  (q = y^T C y), and its covariance is, by Sherman-Morrison,
  (C^-1 + 4 y y^T)^-1 = C - 4 C y y^T C / (1 + 4 q). Hence
  E[exp(-2 z^2) theta theta^T] = (1 + 4 q)^(-1/2) (C - 4 C y y^T C / (1 + 4 q)), whose
  top-left d x d block (C y = (sigma_w^2 x, sigma_b^2)) is the bracket above.

  g depends on x only through |x| and x x^T: its eigenvalues are
  (4 / pi) sigma_w^2 (1 + 4 q)^(-1/2) on the d - 1 directions orthogonal to x and that
  times (1 + 4 sigma_b^2) / (1 + 4 q) along x, so sqrt(det g) (`erf_network_volume`) is
  radially symmetric and decreases with |x|.

  Args:
    x: [B, d] inputs.
    sigma_w: standard deviation of each input weight (> 0).
    sigma_b: standard deviation of the bias (>= 0).

  Returns:
    g: [B, d, d] float64 numpy array.
  """
  x = _erf_network_inputs(x, sigma_w, sigma_b)
  q = sigma_w**2 * np.sum(x**2, axis=1) + sigma_b**2
  scale = 4 / math.pi / np.sqrt(1 + 4 * q)
  identity = np.eye(x.shape[1])
  outer = np.einsum("bi,bj->bij", x, x)
  bracket = sigma_w**2 * identity - (4 * sigma_w**4 / (1 + 4 * q))[:, None, None] * outer
  return scale[:, None, None] * bracket


def erf_network_volume(x, sigma_w: float, sigma_b: float) -> np.ndarray:
  """sqrt(det g) of `erf_network_metric`, from its eigenvalues (see there).

  sqrt(det g) = (4 / pi)^(d/2) sigma_w^d (1 + 4 q)^(-(d + 2) / 4) sqrt(1 + 4 sigma_b^2),
  with q = sigma_w^2 |x|^2 + sigma_b^2.

  Args:
    x: [B, d] inputs.
    sigma_w: standard deviation of each input weight (> 0).
    sigma_b: standard deviation of the bias (>= 0).

  Returns:
    float64 [B] volume elements.
  """
  x = _erf_network_inputs(x, sigma_w, sigma_b)
  dim = x.shape[1]
  q = sigma_w**2 * np.sum(x**2, axis=1) + sigma_b**2
  return ((4 / math.pi)**(dim / 2) * sigma_w**dim * (1 + 4 * q)**(-(dim + 2) / 4)
          * math.sqrt(1 + 4 * sigma_b**2))
