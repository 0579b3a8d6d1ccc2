"""Hooks the trainer calls at every log step, adding values to the run's history.

A hook has a `name` and is called as hook(step, model) -> dict; the trainer records
each value as `f"{hook.name}/{key}"`, so several hooks record side by side.
"""
import numpy as np

from tfrandlabels.analysis import alignment
from tfrandlabels.models import weight_layers


class AlignmentHook:
  """Tracks how a weight layer's filters align with the data it sees.

  Records, per log step: the misalignment M(Sigma_x, Sigma_w) of Maennel et al.,
  the same score in random orthonormal bases (the baseline an unaligned layer
  scores), and the transfer function f(sigma_i) = sqrt(v_i' Sigma_w v_i) over the
  eigenvalues sigma_i^2 of Sigma_x (descending). With the default name the keys are
  `alignment/misalignment`, `alignment/misalignment_random_basis` and
  `alignment/transfer_function`.

  Args:
    sigma_x: the covariance of the layer's input patches.
    layer_index: which weight layer (0: the first).
    seed: seeds the random bases.
    num_bases: how many random bases the baseline averages over.
    name: prefixes the recorded keys; distinct per hook of one run.
  """

  def __init__(self, sigma_x, layer_index=0, seed=0, num_bases=5, name="alignment"):
    self.name = name
    self._sigma_x = np.asarray(sigma_x, np.float64)
    self._layer_index = layer_index
    self._seed = seed
    self._num_bases = num_bases

  def __call__(self, step, model):
    del step
    kernel = weight_layers(model)[self._layer_index].kernel.numpy()
    sigma_w = alignment.filter_covariance(kernel)
    _, f = alignment.transfer_function(self._sigma_x, sigma_w)
    return {
        "misalignment": alignment.misalignment(self._sigma_x, sigma_w),
        "misalignment_random_basis": alignment.random_basis_misalignment(
            sigma_w, seed=self._seed, num_bases=self._num_bases),
        "transfer_function": [float(v) for v in f],
    }
