"""What a weight layer sees: its receptive fields, its input activations and their Sigma_x.

Maennel et al. (NeurIPS 2020, Sec. 2.5) measure the alignment of deeper layers the way
they measure the first: a deeper conv layer's data is the tensor it receives, the output
of the layers before it on the same images (after their activations and pooling), and
its Sigma_x is the covariance of the patches of that tensor it convolves. For the first
layer that tensor is the images, and Sigma_x is the image patches' covariance.

* `input_patches`: (patch size, stride) of a weight layer's receptive fields.
* `conv_layers`: a model's Conv2D layers in forward order.
* `layer_inputs`: the tensors given layers receive on a batch of images, from a Keras
  sub-model `keras.Model(model.input, {name: layer.input, ...})` run with training=False.
* `padded_input`: a conv layer's input zero-padded as its "same" padding pads it, so
  that the valid patches of the result are the patches the layer convolves.
* `input_covariance`, `input_covariances`: Sigma_x of conv layers from their inputs,
  with `alignment.patch_covariance` (unbiased, patches flattened [kh, kw, cin] as the
  layer's kernel is).
"""
from typing import List, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from tfrandlabels.analysis import alignment
from tfrandlabels.models import weight_layers

# Images per forward pass of `layer_inputs`: bounds the memory of the activations of
# one pass, not of the result (which holds every image's).
BATCH_SIZE = 256


def input_patches(layer, input_shape) -> Tuple[tuple, tuple]:
  """(patch size, stride) of the inputs a weight layer sees: its receptive fields.

  Args:
    layer: a Conv2D layer (its kernel size and strides) or a Dense layer, which sees
      its whole input as one patch.
    input_shape: the shape of one input of the layer, without the batch axis.
  """
  if isinstance(layer, keras.layers.Conv2D):
    return tuple(layer.kernel_size), tuple(layer.strides)
  return tuple(input_shape[:-1]) if len(input_shape) > 1 else tuple(input_shape), (1, 1)


def conv_layers(model: keras.Model) -> List[keras.layers.Conv2D]:
  """The model's Conv2D layers in forward order (`models.weight_layers` without Dense)."""
  return [layer for layer in weight_layers(model) if isinstance(layer, keras.layers.Conv2D)]


def _check_conv(layer) -> None:
  """Raises unless `layer` is a conv whose patches are plain [kh, kw, cin] windows."""
  if not isinstance(layer, keras.layers.Conv2D):
    raise ValueError(f"layer {getattr(layer, 'name', layer)!r} must be a Conv2D layer, got "
                     f"{type(layer).__name__}.")
  if (tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1
      or layer.data_format != "channels_last"):
    raise ValueError(f"layer {layer.name!r} must be an undilated, ungrouped, channels_last "
                     f"Conv2D, got dilation_rate={layer.dilation_rate}, groups="
                     f"{layer.groups}, data_format={layer.data_format!r}: its kernel would "
                     "not match the [kh, kw, cin] patches of its input.")


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
  """(before, after): the zeros TensorFlow's "SAME" padding adds along one axis.

  The output has ceil(size / stride) positions; the padding is what the last window
  needs beyond the input, the odd one after (`tf.nn.convolution`'s rule).
  """
  outputs = -(-size // stride)
  total = max((outputs - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def padded_input(layer: keras.layers.Conv2D, inputs) -> tf.Tensor:
  """The layer's input [N, H, W, C] with the zeros its padding adds around each image."""
  inputs = tf.convert_to_tensor(inputs)
  if layer.padding == "valid":
    return inputs
  pads = [same_padding(int(size), kernel, stride) for size, kernel, stride in
          zip(inputs.shape[1:3], layer.kernel_size, layer.strides)]
  return tf.pad(inputs, [(0, 0), *pads, (0, 0)])


def layer_inputs(model: keras.Model, layers: Sequence[keras.layers.Layer], images,
                 batch_size: int = BATCH_SIZE) -> List[np.ndarray]:
  """What each of `layers` receives when the model runs on `images` (training=False).

  Args:
    model: a functional Keras model whose layers include `layers`, each called once.
    layers: layers of `model`.
    images: model-ready inputs [N, ...].
    batch_size: inputs per forward pass.

  Returns:
    One float32 numpy array [N, ...] per layer: the tensor `layer.input` on the images.
  """
  # Outputs keyed by the (unique) layer names: Keras returns a dict as a dict, while a
  # list of one output would come back as a bare tensor.
  sub_model = keras.Model(model.input, {layer.name: layer.input for layer in layers})
  images = np.asarray(images)
  batches = [sub_model(images[start:start + batch_size], training=False)
             for start in range(0, len(images), batch_size)]
  return [np.concatenate([np.asarray(batch[layer.name], np.float32) for batch in batches])
          for layer in layers]


def input_covariance(layer: keras.layers.Conv2D, inputs) -> np.ndarray:
  """Sigma_x of a conv layer: the unbiased covariance of the patches it convolves.

  Args:
    layer: an undilated, ungrouped Conv2D layer ("valid" or "same" padding).
    inputs: what the layer receives, [N, H, W, cin] (`layer_inputs`).

  Returns:
    float64 [d, d] with d = kh * kw * cin, patches flattened [kh, kw, cin] like the
    layer's kernel, so that it pairs with `alignment.filter_covariance(layer.kernel)`.
  """
  _check_conv(layer)
  return alignment.patch_covariance(padded_input(layer, inputs), layer.kernel_size,
                                    layer.strides)[1]


def input_covariances(model: keras.Model, layers: Sequence[keras.layers.Conv2D], images,
                      batch_size: int = BATCH_SIZE) -> List[np.ndarray]:
  """Sigma_x of each conv layer in `layers` on `images`, from one forward pass.

  Args:
    model: a functional Keras model holding `layers`.
    layers: Conv2D layers of `model`; for its first conv layer Sigma_x is the
      covariance of the image patches.
    images: model-ready images [N, H, W, C].
    batch_size: images per forward pass.

  Returns:
    One float64 [d, d] Sigma_x per layer, as `input_covariance` gives it.
  """
  for layer in layers:
    _check_conv(layer)
  return [input_covariance(layer, inputs)
          for layer, inputs in zip(layers, layer_inputs(model, layers, images, batch_size))]
