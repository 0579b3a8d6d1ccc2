"""Attribution maps: which pixels a classifier's score for a class depends on.

Two maps per image, both computed by tf-keras-vis 0.8.7 on Keras 3 models (checked
with TF 2.21 / Keras 3.15 on every model family of `tfrandlabels.models`):

* `saliency_maps`: SmoothGrad (Smilkov et al., 2017), the mean over noisy copies of the
  image of |d score / d pixel|, maximum over colour channels.
* `gradcam_plus_plus`: Grad-CAM++ (Chattopadhay et al., 2018) on the last spatial layer,
  a weighted sum of its feature maps, upsampled bilinearly to the image size.

The score is the logit of the given label. Two details make the library safe here:

* tf-keras-vis replaces the output activation with a linear one on a clone of the
  model (`ReplaceToLinear`, `clone=True`), so a softmax output would be bypassed and
  the caller's model is never modified. Our models output logits already.
* Grad-CAM++ multiplies its gradients by exp(score). That factor is the same for every
  weight of an image, so it cancels when the map is normalized, but exp of a logit above
  ~88 overflows float32 and turns the whole map into NaN (a network that memorized
  random labels can reach such logits). The score is therefore the logit minus its own
  value with the gradient stopped: its gradients are the logit's, its value is 0, so
  exp(score) = 1. SmoothGrad uses gradients only and is unaffected.

Both maps are min-max normalized to [0, 1] per image by tf-keras-vis (a constant map
becomes all zeros).
"""
import contextlib
import numbers
import warnings
from typing import Iterator, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf
from tf_keras_vis.saliency import Saliency
from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

with warnings.catch_warnings():
  # tf-keras-vis 0.8.7 imports `zoom` from scipy.ndimage.interpolation, deprecated and due
  # to be removed in SciPy 2.0; until then it works (SciPy 2.0 will need a newer release).
  warnings.filterwarnings("ignore", category=DeprecationWarning, module="tf_keras_vis")
  from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus


def _checked_inputs(model: keras.Model, images, labels) -> Tuple[np.ndarray, np.ndarray]:
  """Validates a single-input classifier and its batch; returns float32 images, int labels."""
  if len(getattr(model, "inputs", None) or []) != 1 or len(model.outputs) != 1:
    raise ValueError("model must be a functional Keras model with one image input and one "
                     "logits output (e.g. from tfrandlabels.models.build_model).")
  images = np.asarray(images, dtype=np.float32)
  expected = tuple(model.inputs[0].shape[1:])
  if images.ndim != 4 or images.shape[0] == 0 or len(expected) != 3 or any(
      want not in (None, got) for want, got in zip(expected, images.shape[1:])):
    raise ValueError(f"images must be a non-empty batch [n, H, W, C] matching the model input "
                     f"{expected}, got shape {images.shape}.")
  labels = np.asarray(labels)
  num_classes = model.outputs[0].shape[-1]
  if (labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer)
      or labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels must be {images.shape[0]} ints (one per image) in "
                     f"[0, {num_classes}), got {labels.tolist()}.")
  return images, labels.astype(np.int32)


def _functional(model: keras.Model) -> keras.Model:
  """The model as a functional Model: tf-keras-vis reads `output_names`, which a
  Keras 3 Sequential model lacks. Same layers and weights."""
  return model if hasattr(model, "output_names") else keras.Model(model.inputs, model.outputs)


def _label_score(labels: np.ndarray):
  """The tf-keras-vis score: logit of each image's label, shifted to value 0.

  The shift leaves every gradient unchanged and keeps Grad-CAM++'s exp(score) at 1
  (see the module docstring).
  """
  def score(logits):
    label_logits = tf.gather(logits, labels, batch_dims=1)
    return label_logits - tf.stop_gradient(label_logits)
  return score


@contextlib.contextmanager
def _library_quirks(seed: Optional[int] = None) -> Iterator[None]:
  """Seeds NumPy's global generator and hides one warning, restoring both afterwards.

  tf-keras-vis draws SmoothGrad's noise from `np.random.normal`, the global generator,
  so a seed is only honoured by seeding that generator; its state is put back so that
  the caller's random numbers do not change. It also calls a single-input functional
  model on a one-element list, which Keras 3 accepts with a warning about the input
  structure.
  """
  state = np.random.get_state()
  try:
    if seed is not None:
      np.random.seed(seed)
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
      yield
  finally:
    np.random.set_state(state)


def _spatial_layers(model: keras.Model) -> List[str]:
  """Names of the layers (not the input) whose output is a feature map [batch, H, W, C]."""
  return [layer.name for layer in model.layers
          if not isinstance(layer, keras.layers.InputLayer) and len(layer.output.shape) == 4]


def last_spatial_layer(model: keras.Model) -> str:
  """The name of the last layer whose output is a 4-D feature map [batch, H, W, C].

  Grad-CAM++'s default layer: the deepest layer that still has spatial positions
  (the last convolution, or the activation after it), skipping the input layer.
  """
  spatial = _spatial_layers(model)
  if not spatial:
    raise ValueError(f"model {model.name!r} has no layer with a 4-D output [batch, H, W, C]; "
                     "Grad-CAM++ needs a convolutional model.")
  return spatial[-1]


def saliency_maps(model: keras.Model, images, labels, smooth_samples: int = 20,
                  noise: float = 0.2, seed: int = 0) -> np.ndarray:
  """SmoothGrad saliency of each image for its label.

  Args:
    model: a Keras classifier with one input and one output (logits or softmax).
    images: [n, H, W, C] float images, preprocessed as the model expects.
    labels: n class indices; the map explains the logit of labels[i] for images[i].
    smooth_samples: noisy copies per image, >= 1. `smooth_samples=1, noise=0` gives the
      vanilla gradient saliency (Simonyan et al., 2014).
    noise: standard deviation of the Gaussian noise as a fraction of each image's value
      range (max - min), >= 0; SmoothGrad recommends 0.1 to 0.2.
    seed: seed of the noise; equal seeds give identical maps.

  Returns:
    float32 [n, H, W] in [0, 1]: the mean over copies of |gradient|, maximum over
    channels, min-max normalized per image.
  """
  images, labels = _checked_inputs(model, images, labels)
  if isinstance(smooth_samples, bool) or not isinstance(smooth_samples, numbers.Integral) or (
      smooth_samples < 1):
    raise ValueError(f"smooth_samples must be an int >= 1, got {smooth_samples!r}.")
  if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not noise >= 0:
    raise ValueError(f"noise must be >= 0 (a fraction of the image's value range), got "
                     f"{noise!r}.")
  saliency = Saliency(_functional(model), model_modifier=ReplaceToLinear(), clone=True)
  with _library_quirks(seed):
    maps = saliency(_label_score(labels), images, smooth_samples=int(smooth_samples),
                    smooth_noise=noise)
  return np.asarray(maps, dtype=np.float32)


def gradcam_plus_plus(model: keras.Model, images, labels,
                      layer_name: Optional[str] = None) -> np.ndarray:
  """Grad-CAM++ map of each image for its label.

  Args:
    model: a Keras classifier with one input and one output (logits or softmax).
    images: [n, H, W, C] float images, preprocessed as the model expects.
    labels: n class indices; the map explains the logit of labels[i] for images[i].
    layer_name: the layer whose feature maps are weighted; it must have a 4-D output.
      None: `last_spatial_layer(model)`.

  Returns:
    float32 [n, H, W] in [0, 1]: ReLU of the Grad-CAM++-weighted sum of the layer's
    feature maps, upsampled bilinearly to the image size, min-max normalized per image.
  """
  images, labels = _checked_inputs(model, images, labels)
  if layer_name is None:
    layer_name = last_spatial_layer(model)
  spatial = _spatial_layers(model)
  if layer_name not in spatial:
    raise ValueError(f"layer_name={layer_name!r} is not a layer of {model.name!r} with a 4-D "
                     f"output; allowed: {', '.join(spatial) or 'none'}.")
  gradcam = GradcamPlusPlus(_functional(model), model_modifier=ReplaceToLinear(), clone=True)
  with _library_quirks():
    maps = gradcam(_label_score(labels), images, penultimate_layer=layer_name,
                   seek_penultimate_conv_layer=False)
  return np.asarray(maps, dtype=np.float32)
