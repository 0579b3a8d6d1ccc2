"""Alignment in every conv layer (Maennel et al., Sec. 2.5): Sigma_x of a deeper layer's
input against numpy on activations from a Keras sub-model, the hook's per-layer values,
the transfer results' per-layer tracks and their figure."""
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from matplotlib.figure import Figure

from test_alignment import numpy_patches
from tfrandlabels import io
from tfrandlabels.analysis import alignment
from tfrandlabels.analysis import layer_inputs
from tfrandlabels.experiments import transfer
from tfrandlabels.experiments import transfer_report
from tfrandlabels.pipeline import plots
from tfrandlabels.pipeline import results
from tfrandlabels.training import hooks


def tiny_model():
  """conv1 (valid) -> max pool -> conv2 ("same", stride 2) -> conv3 (1x1) -> dense.

  conv2 sees the pooled 4x4x4 map zero-padded by 0 rows/columns before and 1 after
  (TensorFlow's SAME: 2 outputs of stride 2 need (2 - 1) * 2 + 3 = 5 > 4 inputs).
  Deeper layers have more filters than inputs per filter, so that their Sigma_w is
  well conditioned and the misalignment (which inverts it) is compared tightly.
  """
  keras.utils.set_random_seed(0)
  image = keras.Input((10, 10, 2))
  x = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(image)
  x = keras.layers.MaxPooling2D(2, name="pool")(x)
  x = keras.layers.Conv2D(40, 3, strides=2, padding="same", activation="relu",
                          name="conv2")(x)
  x = keras.layers.Conv2D(48, 1, activation="relu", name="conv3")(x)
  x = keras.layers.Flatten()(x)
  return keras.Model(image, keras.layers.Dense(2, name="logits")(x))


@pytest.fixture(scope="module")
def model():
  return tiny_model()


@pytest.fixture(scope="module")
def images():
  """Enough images that every layer sees more patches than it has inputs per filter
  (conv2: 4 patches of 36 values per image), so that Sigma_x has distinct eigenvalues
  and the eigenbasis the misalignment is taken in is unique."""
  return np.random.default_rng(0).normal(size=(64, 10, 10, 2)).astype(np.float32)


def numpy_input_patches(model, layer, images, pad):
  """The patches `layer` convolves, by numpy loops over its input from a Keras sub-model
  `keras.Model(model.input, layer.input)` padded by ((top, bottom), (left, right))."""
  inputs = np.asarray(keras.Model(model.input, layer.input)(images, training=False))
  padded = np.pad(inputs, ((0, 0), *pad, (0, 0)))
  return inputs, numpy_patches(padded, layer.kernel_size, layer.strides)


@pytest.mark.parametrize("name,pad", [("conv2", ((0, 1), (0, 1))), ("conv3", ((0, 0), (0, 0)))])
def test_deeper_layer_sigma_x_is_the_covariance_of_its_input_patches(model, images, name, pad):
  layer = model.get_layer(name)
  inputs, patches = numpy_input_patches(model, layer, images, pad)
  # The numpy patches are what the layer convolves: times the kernel, they give its
  # pre-activation output.
  kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
  convolved = tf.nn.convolution(inputs, layer.kernel, strides=layer.strides,
                                padding=layer.padding.upper()) + layer.bias
  np.testing.assert_allclose(patches @ kernel.reshape(-1, kernel.shape[-1]) + bias,
                             np.asarray(convolved).reshape(len(patches), -1), rtol=1e-5,
                             atol=1e-5)
  expected = np.cov(patches, rowvar=False)
  np.testing.assert_allclose(layer_inputs.input_covariance(layer, inputs), expected,
                             rtol=1e-5, atol=1e-7)
  sigma_x, = layer_inputs.input_covariances(model, [layer], images, batch_size=4)
  np.testing.assert_allclose(sigma_x, expected, rtol=1e-5, atol=1e-7)
  assert sigma_x.shape == (int(np.prod(layer.kernel.shape[:-1])),) * 2


def test_first_layer_sigma_x_is_the_image_patch_covariance(model, images):
  layer = model.get_layer("conv1")
  assert layer_inputs.conv_layers(model) == [layer, model.get_layer("conv2"),
                                             model.get_layer("conv3")]
  patch, stride = layer_inputs.input_patches(layer, images.shape[1:])
  sigma_x, = layer_inputs.input_covariances(model, [layer], images)
  np.testing.assert_allclose(sigma_x, alignment.patch_covariance(images, patch, stride)[1],
                             rtol=1e-12)


@pytest.mark.parametrize("size,kernel,stride,expected", [
    (4, 3, 2, (0, 1)), (5, 3, 1, (1, 1)), (8, 4, 2, (1, 1)), (7, 1, 2, (0, 0)), (6, 4, 1, (1, 2))])
def test_same_padding_follows_tensorflow(size, kernel, stride, expected):
  assert layer_inputs.same_padding(size, kernel, stride) == expected
  ones = tf.ones([1, size, 1, 1])
  same = tf.nn.conv2d(ones, tf.ones([kernel, 1, 1, 1]), [1, stride, 1, 1], "SAME")
  padded = tf.pad(ones, [(0, 0), expected, (0, 0), (0, 0)])
  valid = tf.nn.conv2d(padded, tf.ones([kernel, 1, 1, 1]), [1, stride, 1, 1], "VALID")
  np.testing.assert_array_equal(same, valid)


def test_unsupported_layers_are_refused(images):
  dilated = keras.layers.Conv2D(2, 3, dilation_rate=2)
  dilated.build((None, 10, 10, 2))
  with pytest.raises(ValueError, match="undilated, ungrouped"):
    layer_inputs.input_covariance(dilated, images)
  with pytest.raises(ValueError, match="must be a Conv2D layer"):
    layer_inputs.input_covariance(keras.layers.Dense(2), images)


def test_hook_records_every_deeper_layer_as_a_direct_computation(model, images):
  sigma_first = layer_inputs.input_covariances(model, [model.get_layer("conv1")], images)[0]
  hook = hooks.AlignmentHook(sigma_first, seed=3, num_bases=2, subspace_k=4,
                             layer_images=images, layer_every=20, layer_first=10)
  values = hook(10, model)
  first = hooks.AlignmentHook(sigma_first, seed=3, num_bases=2, subspace_k=4)(10, model)
  assert {key: values[key] for key in first} == first  # The first layer's keys, as before.
  for index, name, pad in ((1, "conv2", ((0, 1), (0, 1))), (2, "conv3", ((0, 0), (0, 0)))):
    layer = model.get_layer(name)
    sigma_x = np.cov(numpy_input_patches(model, layer, images, pad)[1], rowvar=False)
    sigma_w = alignment.filter_covariance(layer.kernel.numpy())
    dim = sigma_x.shape[0]
    sigma, f = alignment.transfer_function(sigma_x, sigma_w)
    prefix = f"layer{index}/"
    expected = {
        "misalignment": alignment.misalignment(sigma_x, sigma_w),
        "misalignment_random_basis": alignment.random_basis_misalignment(sigma_w, seed=3,
                                                                         num_bases=2),
        "subspace_overlap": alignment.subspace_overlap(sigma_x, sigma_w, 4),
        "subspace_overlap_random": 4 / dim, "transfer_function": f, "sigma": sigma}
    for key, value in expected.items():
      np.testing.assert_allclose(values[prefix + key], value, rtol=1e-4, atol=1e-6,
                                 err_msg=prefix + key)
  assert set(values) == set(first) | {f"layer{i}/{key}" for i in (1, 2) for key in expected}
  # Deeper layers are tracked at layer_first and at multiples of layer_every.
  assert "layer1/misalignment" not in hook(30, model)
  assert "layer1/misalignment" in hook(40, model)


def test_hook_clips_k_and_leaves_out_large_layers(model, images):
  values = hooks.AlignmentHook(np.eye(18), layer_images=images, max_layer_dim=38)(1, model)
  # conv2 sees 3x3x4 = 36 inputs per filter, conv3 1x1x40 = 40, more than 38.
  assert len(values["layer1/sigma"]) == 36 and "layer2/misalignment" not in values
  image = keras.Input((6, 6, 3))
  narrow = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(image)
  narrow = keras.Model(image, keras.layers.Conv2D(6, 1, name="conv2")(narrow))
  values = hooks.AlignmentHook(np.eye(27), subspace_k=5, layer_images=images[:, :6, :6, :1]
                               .repeat(3, axis=-1))(1, narrow)
  assert values["layer1/subspace_overlap_random"] == 1.0  # k = 5 clipped to d = 4.
  with pytest.raises(ValueError, match="layer_every must be an int >= 1"):
    hooks.AlignmentHook(np.eye(18), layer_images=images, layer_every=0)


def history_record(step, deeper):
  record = {"step": step, "loss": 1.0, "alignment/misalignment": 2.0 - step / 100,
            "alignment/misalignment_random_basis": 3.0, "alignment/subspace_overlap": 0.5,
            "alignment/subspace_overlap_random": 0.5, "alignment/transfer_function": [1, 2]}
  if deeper:
    record.update({"alignment/layer1/misalignment": 5.0 - step / 100,
                   "alignment/layer1/misalignment_random_basis": 6.0,
                   "alignment/layer1/subspace_overlap": 0.3,
                   "alignment/layer1/subspace_overlap_random": 0.25,
                   "alignment/layer1/transfer_function": [1, 2, 3, 4],
                   "alignment/layer1/sigma": [4, 3, 2, step / 100]})
  return record


def test_results_carry_a_track_per_conv_layer():
  history = [history_record(step, deeper=step in (10, 30)) for step in (10, 20, 30)]
  sigma_x = np.diag([4.0, 1.0])
  track = transfer.alignment_track(history, sigma_x, ["conv1", "conv2", "conv3"])
  results.validate(track, results.AlignmentTrack)
  assert list(track["layers"]) == ["conv1", "conv2"]  # conv3 recorded nothing.
  first, second = track["layers"]["conv1"], track["layers"]["conv2"]
  assert first["step"] == [10, 20, 30] and first["dim"] == 2
  assert first["misalignment"] == track["misalignment"] == [1.9, 1.8, 1.7]
  assert first["sigma"] == [[2.0, 1.0]] * 3
  assert second["step"] == [10, 30] and second["dim"] == 4
  assert second["misalignment"] == [4.9, 4.7]
  assert second["sigma"] == [[4, 3, 2, 0.1], [4, 3, 2, 0.3]]
  assert "layers" not in transfer.alignment_track(history, sigma_x)
  sentence = transfer_report._layer_alignment(track["layers"])
  assert "conv1 (d = 2, step 30): M 1.700 against 3.000 in random bases" in sentence
  assert "conv2 (d = 4, step 30): M 4.700 against 6.000 in random bases, top-1 overlap " \
         "0.30 against 1/4 = 0.25" in sentence
  figure = plots.layer_alignment(track["layers"])
  assert isinstance(figure, Figure) and len(figure.axes) == 4
  top, bottom = figure.axes[1], figure.axes[3]
  assert top.get_title() == "conv2 (d = 4)" and bottom.get_xlabel() == "pretraining step"
  assert [line.get_label() for line in bottom.lines] == [
      "top-1 subspace overlap", "k/d = 1/4 (random subspace)"]
  with pytest.raises(ValueError, match="at least one conv layer"):
    plots.layer_alignment({"conv1": {**first, "step": []}})


def test_layers_keep_their_forward_order_through_the_results_file(tmp_path):
  """Results files sort their keys (conv10 before conv2); the track keeps the model's order
  and the figure draws the layers in it, five to a row."""
  names = [f"conv{i}" for i in range(1, 13)]
  layer = transfer.alignment_track([history_record(10, deeper=True)], np.diag([4.0, 1.0]),
                                   ["conv1", "conv2"])["layers"]["conv2"]
  track = {"layers": {name: layer for name in names}, "layer_order": names}
  path = str(tmp_path / "track.json")
  io.write_json(path, track)
  read = io.read_json(path)
  assert list(read["layers"])[:3] == ["conv1", "conv10", "conv11"]
  assert list(results.forward_layers(read)) == names
  assert results.forward_layers({}) == {}
  figure = plots.layer_alignment(results.forward_layers(read))
  drawn = [axes.get_title() for axes in figure.axes if axes.get_title()]
  assert drawn == [f"{name} (d = 4)" for name in names]
  assert sum(axes.axison for axes in figure.axes) == 2 * len(names)  # 3 rows of 5 pairs.
  assert len(figure.axes) == 2 * 3 * 5


def test_deeper_layers_are_tracked_at_about_twenty_points():
  quick = types.SimpleNamespace(pretrain_steps=2000, log_every=10)
  assert transfer.layer_every(quick) == 100
  assert transfer.layer_every(types.SimpleNamespace(pretrain_steps=30, log_every=10)) == 10
  assert transfer.layer_every(types.SimpleNamespace(pretrain_steps=250, log_every=10)) == 20
