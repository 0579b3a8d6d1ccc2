"""Transfer of pretrained layers into a fresh model (Maennel et al., NeurIPS 2020, Sec. 3).

Variants, for the first k weight layers (`models.weight_layers` order); all later
layers keep their fresh initialization:
  scratch       nothing transferred.
  pretrained    the pretrained kernel rescaled to the L2 norm the fresh kernel has at
                initialization (the paper's control for weight scale); its bias is
                scaled by the same factor, so the layer computes the pretrained
                function up to a positive scale.
  no_rescaling  the pretrained kernel and bias as they are.
  covariance    filters drawn i.i.d. from N(0, Sigma_w), Sigma_w the covariance of
                the pretrained layer's filters, layer by layer; biases stay zero.
Layers without a kernel (batch norm) are not transferred.
"""
import numpy as np

from tfrandlabels.analysis import alignment
from tfrandlabels.models import weight_layers

VARIANTS = ("scratch", "pretrained", "no_rescaling", "covariance")
# Sigma_w is d x d for d inputs per filter; beyond this it is too large to factorize.
MAX_COVARIANCE_DIM = 8192


def transferable_depth(model):
  """How many leading weight layers may be transferred: all but the classifier."""
  return len(weight_layers(model)) - 1


def check_transfer(model, variant, k):
  """Raises ValueError when `variant` cannot transfer k layers of this model."""
  if variant not in VARIANTS:
    raise ValueError(f"variant={variant!r} is not one of {', '.join(VARIANTS)}")
  depth = transferable_depth(model)
  if variant != "scratch" and not 1 <= k <= depth:
    raise ValueError(f"k={k} must be between 1 and {depth}, the number of weight layers "
                     "below the classifier")
  if variant == "covariance":
    for layer in weight_layers(model)[:k]:
      dim = int(np.prod(layer.kernel.shape[:-1]))
      if dim > MAX_COVARIANCE_DIM:
        raise ValueError(
            f"k={k}: variant covariance would need Sigma_w of layer {layer.name!r} with "
            f"{dim} inputs per unit (at most {MAX_COVARIANCE_DIM}); transfer fewer layers "
            "with this variant")


def sample_filters(sigma_w, shape, rng):
  """Draws shape[-1] filters i.i.d. from N(0, sigma_w); returns a kernel of `shape`."""
  eigenvalues, eigenvectors = np.linalg.eigh(sigma_w)
  factor = eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))
  samples = factor @ rng.standard_normal((sigma_w.shape[0], shape[-1]))
  return samples.reshape(shape).astype(np.float32)


def apply_transfer(model, pretrained, variant, k, seed=0):
  """Initializes the first k weight layers of `model` from `pretrained` in place.

  Args:
    model: a freshly initialized model (same architecture below the classifier).
    pretrained: the pretrained model.
    variant: one of VARIANTS.
    k: number of leading weight layers to transfer (ignored for `scratch`).
    seed: seed of the `covariance` draws.

  Returns:
    model, for chaining.
  """
  check_transfer(model, variant, k)
  if variant == "scratch":
    return model
  rng = np.random.default_rng(seed)
  for fresh, source in zip(weight_layers(model)[:k], weight_layers(pretrained)[:k]):
    kernel = source.kernel.numpy()
    bias = None if source.bias is None else source.bias.numpy()
    if variant == "pretrained":
      scale = np.linalg.norm(fresh.kernel.numpy()) / np.linalg.norm(kernel)
      kernel = kernel * scale
      bias = None if bias is None else bias * scale
    elif variant == "covariance":
      kernel = sample_filters(alignment.filter_covariance(kernel), kernel.shape, rng)
      bias = None if bias is None else np.zeros_like(bias)
    fresh.kernel.assign(kernel)
    if bias is not None:
      fresh.bias.assign(bias)
  return model
