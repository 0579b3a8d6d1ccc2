"""Hooks the trainer calls at every log step, adding values to the run's history.

A hook has a `name` and is called as hook(step, model) -> dict; the trainer records
each value as `f"{hook.name}/{key}"`, so several hooks record side by side.
"""
import numpy as np

from tfrandlabels.analysis import alignment
from tfrandlabels.analysis import layer_inputs
from tfrandlabels.data import ops
from tfrandlabels.models import weight_layers


def alignment_values(sigma_x, kernel, *, seed, num_bases, subspace_k, with_sigma=False):
  """How a layer's filters align with its inputs, as `AlignmentHook` records it.

  Args:
    sigma_x: the [d, d] covariance of the layer's input patches.
    kernel: the layer's kernel, [kh, kw, cin, cout] or [din, dout].
    seed: seeds the random bases of the baseline.
    num_bases: how many random bases the baseline averages over.
    subspace_k: k of the subspace overlap, in [1, d].
    with_sigma: also return "sigma", the x axis of f, for a Sigma_x that changes.

  Returns:
    {"misalignment", "misalignment_random_basis", "subspace_overlap",
    "subspace_overlap_random" (k/d), "transfer_function" (f(sigma_i), sigma_i descending)}
    and, with_sigma, "sigma" (sigma_i: square roots of Sigma_x's eigenvalues).
  """
  sigma_w = alignment.filter_covariance(kernel)
  sigma, f = alignment.transfer_function(sigma_x, sigma_w)
  values = {
      "misalignment": alignment.misalignment(sigma_x, sigma_w),
      "misalignment_random_basis": alignment.random_basis_misalignment(
          sigma_w, seed=seed, num_bases=num_bases),
      "subspace_overlap": alignment.subspace_overlap(sigma_x, sigma_w, subspace_k),
      "subspace_overlap_random": alignment.random_subspace_overlap(sigma_x.shape[0],
                                                                   subspace_k),
      "transfer_function": [float(v) for v in f],
  }
  if with_sigma:
    values["sigma"] = [float(v) for v in sigma]
  return values


def layer_key(index):
  """The key prefix of the conv layer `index` (0: the first) in `AlignmentHook`'s
  per-layer values: 'layer1' for the second conv layer."""
  return f"layer{index}"


class AlignmentHook:
  """Tracks how a weight layer's filters align with the data it sees, and optionally
  how every deeper conv layer's filters align with the activations it receives.

  Records, per log step: the misalignment M(Sigma_x, Sigma_w) of Maennel et al.,
  the same score in random orthonormal bases (the baseline an unaligned layer
  scores), the overlap of the top-k principal subspaces of Sigma_x and Sigma_w with
  its baseline k/d for a random subspace (constant, recorded next to each value like
  the other baseline), and the transfer function f(sigma_i) = sqrt(v_i' Sigma_w v_i)
  over the eigenvalues sigma_i^2 of Sigma_x (descending). With the default name the
  keys are `alignment/misalignment`, `alignment/misalignment_random_basis`,
  `alignment/subspace_overlap`, `alignment/subspace_overlap_random` and
  `alignment/transfer_function`.

  Deeper conv layers (Maennel et al., Sec. 2.5), when `layer_images` is given: the
  data of conv layer i >= 1 (in forward order) is its input, the previous layers'
  output, which changes as they train; so at every step that is a multiple of
  `layer_every`, and at `layer_first` (the first log step), its Sigma_x is recomputed
  from the current model on the fixed `layer_images` (`layer_inputs.input_covariances`, one forward pass with
  training=False), and the same values are recorded under `layer<i>/` (e.g.
  `alignment/layer1/misalignment`), with `layer<i>/sigma`, the square roots of Sigma_x's
  eigenvalues (descending), the x axis of that step's f(sigma). k is clipped to each
  layer's d = kh * kw * cin. Layers with d > `max_layer_dim` are left out: their
  eigendecompositions would cost more than the training between two log steps.

  Args:
    sigma_x: the [d, d] covariance of the first layer's input patches.
    layer_index: which weight layer the unprefixed keys track (0: the first).
    seed: seeds the random bases.
    num_bases: how many random bases the baseline averages over.
    subspace_k: k of the subspace overlap, in [1, d].
    name: prefixes the recorded keys; distinct per hook of one run.
    layer_images: model-ready images [N, H, W, C] on which deeper conv layers' inputs
      are computed, or None to track only the first layer.
    layer_every: deeper layers are tracked at the steps that are multiples of it, which
      bounds their cost; a multiple of the log interval.
    layer_first: a step at which deeper layers are tracked too: the first log step, so
      the track starts near initialization. A step, not "the first call", so that a
      resumed run records what an uninterrupted one does.
    max_layer_dim: largest d of a tracked deeper layer.
  """

  def __init__(self, sigma_x, layer_index=0, seed=0, num_bases=5,
               subspace_k=alignment.SUBSPACE_K, name="alignment", layer_images=None,
               layer_every=1, layer_first=None, max_layer_dim=1024):
    self.name = name
    self._sigma_x = np.asarray(sigma_x, np.float64)
    alignment.random_subspace_overlap(self._sigma_x.shape[0], subspace_k)  # Checks k.
    self._layer_index = layer_index
    self._scores = dict(seed=seed, num_bases=num_bases)
    self._subspace_k = subspace_k
    self._layer_images = (None if layer_images is None
                          else np.asarray(layer_images, np.float32))
    if not (isinstance(layer_every, int) and layer_every >= 1):
      raise ValueError(f"layer_every must be an int >= 1, got {layer_every!r}.")
    self._layer_every = layer_every
    self._layer_first = layer_first
    self._max_layer_dim = max_layer_dim

  def __call__(self, step, model):
    kernel = weight_layers(model)[self._layer_index].kernel.numpy()
    values = alignment_values(self._sigma_x, kernel, subspace_k=self._subspace_k,
                              **self._scores)
    if self._layer_images is not None and (step % self._layer_every == 0
                                           or step == self._layer_first):
      values.update(self._deeper_layer_values(model))
    return values

  def _deeper_layer_values(self, model):
    """The per-layer values of every tracked conv layer after the first."""
    tracked = [(index, layer) for index, layer in enumerate(layer_inputs.conv_layers(model))
               if index >= 1 and np.prod(layer.kernel.shape[:-1]) <= self._max_layer_dim]
    if not tracked:
      return {}
    indices, layers = zip(*tracked)
    values = {}
    for index, layer, sigma_x in zip(indices, layers, layer_inputs.input_covariances(
        model, layers, self._layer_images)):
      scores = alignment_values(sigma_x, layer.kernel.numpy(),
                                subspace_k=min(self._subspace_k, sigma_x.shape[0]),
                                with_sigma=True, **self._scores)
      values.update({f"{layer_key(index)}/{key}": value for key, value in scores.items()})
    return values


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
