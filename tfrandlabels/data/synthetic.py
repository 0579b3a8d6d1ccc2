"""Synthetic data sets with known statistics.

`gaussian_random_labels` is the setting of Maennel et al. (NeurIPS 2020), Fig. 4 left
and Appendix E.1: inputs x ~ N(0, Sigma_x) with a diagonal Sigma_x and labels drawn
uniformly at random, so any structure a network's first layer acquires comes from
Sigma_x alone.

`xor` and `sinusoid` are the 2-D toy tasks of Zavatone-Veth et al. (2023): four XOR
points, and points uniform in [-1, 1]^2 labelled by which side of a sine curve they lie.
They yield float64 inputs, for networks that compute in float64.
"""
import numpy as np
import tensorflow as tf


def variance_ladder(dim, low, high):
  """diag(Sigma_x) = (low, ..., high) in `dim` equal steps, e.g. (0.1, 0.2, ..., 3.0)."""
  if dim < 1 or not 0 < low <= high:
    raise ValueError(f"need dim >= 1 and 0 < low <= high, got dim={dim}, low={low}, "
                     f"high={high}")
  return np.linspace(low, high, dim)


def gaussian_random_labels(variances, num_samples, num_classes, seed):
  """Samples x ~ N(0, diag(variances)) with uniform random labels.

  Args:
    variances: the diagonal of Sigma_x (length = input dimension).
    num_samples: number of examples.
    num_classes: labels are uniform over range(num_classes).
    seed: numpy seed; the data set is a pure function of the arguments.

  Returns:
    A tf.data.Dataset of {"image": float32 [dim], "label": int64, "index": int64}.
  """
  if num_samples < 1 or num_classes < 2:
    raise ValueError(f"num_samples={num_samples} must be >= 1 and num_classes="
                     f"{num_classes} >= 2")
  rng = np.random.default_rng(seed)
  variances = np.asarray(variances, np.float64)
  inputs = rng.standard_normal((num_samples, variances.size)) * np.sqrt(variances)
  return tf.data.Dataset.from_tensor_slices({
      "image": inputs.astype(np.float32),
      "label": rng.integers(0, num_classes, num_samples).astype(np.int64),
      "index": np.arange(num_samples, dtype=np.int64)})


def _vectors(inputs, labels):
  """A tf.data.Dataset of {"image": float64 [d], "label": int64, "index": int64}."""
  return tf.data.Dataset.from_tensor_slices({
      "image": np.asarray(inputs, np.float64),
      "label": np.asarray(labels, np.int64),
      "index": np.arange(len(labels), dtype=np.int64)})


def xor():
  """The four XOR points (+-1, +-1), label 1 where the signs differ."""
  inputs = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]])
  return _vectors(inputs, [0, 1, 1, 0])


def sinusoid_boundary(x1):
  """The sinusoid task's decision boundary: x2 = 0.6 sin(7 x1 - 1)."""
  return 0.6 * np.sin(7 * np.asarray(x1) - 1)


def sinusoid(num_samples, seed):
  """Points uniform in [-1, 1]^2, label 1 above the curve `sinusoid_boundary`.

  Args:
    num_samples: number of examples.
    seed: numpy seed; the data set is a pure function of the arguments.

  Returns:
    A tf.data.Dataset of {"image": float64 [2], "label": int64, "index": int64}.
  """
  if num_samples < 1:
    raise ValueError(f"num_samples={num_samples} must be >= 1")
  inputs = np.random.default_rng(seed).uniform(-1, 1, (num_samples, 2))
  return _vectors(inputs, inputs[:, 1] > sinusoid_boundary(inputs[:, 0]))
