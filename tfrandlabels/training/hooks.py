"""Hooks the trainer calls at every log step, adding values to the run's history.

A hook has a `name` and is called as hook(step, model) -> dict; the trainer records
each value as `f"{hook.name}/{key}"`, so several hooks record side by side.
"""
import numpy as np

from tfrandlabels.analysis import alignment
from tfrandlabels.data import ops
from tfrandlabels.models import weight_layers


class AlignmentHook:
  """Tracks how a weight layer's filters align with the data it sees.

  Records, per log step: the misalignment M(Sigma_x, Sigma_w) of Maennel et al.,
  the same score in random orthonormal bases (the baseline an unaligned layer
  scores), the overlap of the top-k principal subspaces of Sigma_x and Sigma_w with
  its baseline k/d for a random subspace (constant, recorded next to each value like
  the other baseline), and the transfer function f(sigma_i) = sqrt(v_i' Sigma_w v_i)
  over the eigenvalues sigma_i^2 of Sigma_x (descending). With the default name the
  keys are `alignment/misalignment`, `alignment/misalignment_random_basis`,
  `alignment/subspace_overlap`, `alignment/subspace_overlap_random` and
  `alignment/transfer_function`.

  Args:
    sigma_x: the [d, d] covariance of the layer's input patches.
    layer_index: which weight layer (0: the first).
    seed: seeds the random bases.
    num_bases: how many random bases the baseline averages over.
    subspace_k: k of the subspace overlap, in [1, d].
    name: prefixes the recorded keys; distinct per hook of one run.
  """

  def __init__(self, sigma_x, layer_index=0, seed=0, num_bases=5,
               subspace_k=alignment.SUBSPACE_K, name="alignment"):
    self.name = name
    self._sigma_x = np.asarray(sigma_x, np.float64)
    self._layer_index = layer_index
    self._seed = seed
    self._num_bases = num_bases
    self._subspace_k = subspace_k
    self._subspace_overlap_random = alignment.random_subspace_overlap(
        self._sigma_x.shape[0], subspace_k)

  def __call__(self, step, model):
    del step
    kernel = weight_layers(model)[self._layer_index].kernel.numpy()
    sigma_w = alignment.filter_covariance(kernel)
    _, f = alignment.transfer_function(self._sigma_x, sigma_w)
    return {
        "misalignment": alignment.misalignment(self._sigma_x, sigma_w),
        "misalignment_random_basis": alignment.random_basis_misalignment(
            sigma_w, seed=self._seed, num_bases=self._num_bases),
        "subspace_overlap": alignment.subspace_overlap(self._sigma_x, sigma_w,
                                                       self._subspace_k),
        "subspace_overlap_random": self._subspace_overlap_random,
        "transfer_function": [float(v) for v in f],
    }


def filter_key(spec):
  """The history key of a frequency filter: 'low_pass:4' -> 'low_pass_4'."""
  return spec.replace(":", "_")


class FilteredAccuracyHook:
  """Accuracy on frequency-filtered copies of fixed images: which frequencies a model
  uses, and in which order it learns them (Wang et al., ICCV 2023, Sec. 4).

  The copies are made once, with `data.ops.frequency_filter`, from model-ready images
  (after normalization, as `--eval_filter` filters). Records per log step
  `unfiltered` and, per filter, its `filter_key` (e.g. `low_pass_4`): the share of
  the images whose predicted class (argmax of the outputs, logits or probabilities)
  is their label.

  Args:
    images: model-ready float images [N, H, W, C].
    labels: their classes [N].
    filters: filter specs as `ops.parse_filter` reads them, e.g. ("low_pass:4",
      "high_pass:4").
    batch_size: images per forward pass.
    name: prefixes the recorded keys; distinct per hook of one run.
  """

  def __init__(self, images, labels, filters, batch_size=256, name="learning_order"):
    self.name = name
    self._labels = np.asarray(labels).reshape(-1)
    self._batch_size = batch_size
    self._copies = {"unfiltered": np.asarray(images, np.float32)}
    for spec in filters:
      filtered = ops.frequency_filter(spec)({"image": self._copies["unfiltered"]})["image"]
      self._copies[filter_key(spec)] = np.asarray(filtered)

  def __call__(self, step, model):
    del step
    accuracy = {}
    for key, images in self._copies.items():
      predicted = np.concatenate([
          np.argmax(np.asarray(model(images[i:i + self._batch_size], training=False)), -1)
          for i in range(0, len(images), self._batch_size)])
      accuracy[key] = float(np.mean(predicted == self._labels))
    return accuracy
