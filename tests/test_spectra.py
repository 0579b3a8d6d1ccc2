"""Class spectra, ADCS, frequency removal, DFMs and shortcut rates against numpy."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrandlabels.analysis import spectra
from tfrandlabels.data import frequency


def numpy_amplitudes(images):
  return np.abs(np.fft.fftshift(np.fft.fft2(images, axes=(1, 2)), axes=(1, 2)))


def numpy_class_means(images, labels, num_classes):
  amplitudes = numpy_amplitudes(images)
  return np.stack([amplitudes[labels == c].mean(axis=0) for c in range(num_classes)])


def numpy_adcs(means):
  """The paper's formula, written as loops."""
  result = np.zeros(means.shape, np.int64)
  for c in range(len(means)):
    for other in range(len(means)):
      if other != c:
        result[c] += np.sign(means[c] - means[other]).astype(np.int64)
  return result


def unshifted_index(centred, size):
  """Index in np.fft.fft2's layout of a centred (fftshift) index."""
  return (centred - size // 2) % size


def numpy_remove(image, row, col):
  """Reference removal: fft2 per channel, zero (u, v) and (-u, -v), ifft2, real part."""
  height, width = image.shape[:2]
  u, v = unshifted_index(row, height), unshifted_index(col, width)
  spectrum = np.fft.fft2(image, axes=(0, 1))
  spectrum[u, v] = 0
  spectrum[-u % height, -v % width] = 0
  filtered = np.fft.ifft2(spectrum, axes=(0, 1))
  assert np.abs(filtered.imag).max() < 1e-9
  return filtered.real


def test_amplitude_spectra_match_numpy():
  images = np.random.default_rng(0).normal(size=(3, 6, 5, 2))
  np.testing.assert_allclose(spectra.amplitude_spectra(images), numpy_amplitudes(images),
                             rtol=1e-12, atol=1e-12)
  as_float32 = spectra.amplitude_spectra(images.astype(np.float32))
  assert as_float32.dtype == tf.float32
  np.testing.assert_allclose(as_float32, numpy_amplitudes(images), rtol=1e-4, atol=1e-4)


def test_class_spectra_and_adcs_match_numpy():
  rng = np.random.default_rng(1)
  images = rng.uniform(0, 255, size=(14, 6, 5, 3))
  labels = np.array([0, 1, 2, 3] * 3 + [1, 2])
  expected = numpy_class_means(images, labels, 4)
  means = spectra.class_mean_spectra([{"image": images, "label": labels}], 4)
  assert means.dtype == np.float64 and means.shape == (4, 6, 5, 3)
  np.testing.assert_allclose(means, expected, rtol=1e-12)
  np.testing.assert_array_equal(spectra.adcs(expected), numpy_adcs(expected))
  sums, counts = spectra.class_spectrum_sums(images, labels, 4)
  np.testing.assert_array_equal(counts, [3, 4, 4, 3])
  np.testing.assert_allclose(sums[1], numpy_amplitudes(images[labels == 1]).sum(axis=0),
                             rtol=1e-12)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_adcs_range_and_extremes(num_classes):
  means = np.random.default_rng(2).uniform(size=(num_classes, 8, 8, 3))
  scores = spectra.adcs(means)
  assert scores.min() == 1 - num_classes and scores.max() == num_classes - 1
  # Without ties, ADCS_c = (classes below c) - (classes above c): these sum to zero over
  # the classes and have the parity of C - 1.
  np.testing.assert_array_equal(scores.sum(axis=0), 0)
  assert np.all((scores - (num_classes - 1)) % 2 == 0)
  largest = means.argmax(axis=0)
  np.testing.assert_array_equal(np.take_along_axis(scores, largest[None], 0)[0],
                                num_classes - 1)


def test_streaming_equals_one_shot():
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, size=(23, 8, 8, 3)).astype(np.uint8)
  labels = rng.integers(0, 3, size=23)
  labels[:3] = [0, 1, 2]
  one_shot = spectra.class_mean_spectra([{"image": images, "label": labels}], 3)
  dataset = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}).batch(5)
  np.testing.assert_allclose(spectra.class_mean_spectra(dataset, 3), one_shot, rtol=1e-12)
  batches = [{"image": images[i:i + 7], "label": labels[i:i + 7]} for i in range(0, 23, 7)]
  np.testing.assert_allclose(spectra.class_mean_spectra(batches, 3), one_shot, rtol=1e-12)
  merged = spectra.merge_spectrum_sums(
      spectra.class_spectrum_sums(images[:10], labels[:10], 3),
      spectra.class_spectrum_sums(images[10:], labels[10:], 3))
  np.testing.assert_allclose(merged[0] / merged[1].numpy()[:, None, None, None], one_shot,
                             rtol=1e-12)
  np.testing.assert_allclose(one_shot, numpy_class_means(images.astype(np.float64), labels, 3),
                             rtol=1e-12)


def test_a_class_without_images_is_refused():
  images = np.zeros((4, 4, 4, 1))
  with pytest.raises(ValueError, match=r"classes \[2\] have no images"):
    spectra.class_mean_spectra([{"image": images, "label": np.array([0, 1, 0, 1])}], 3)


@pytest.mark.parametrize("size", [8, 7])
def test_removal_masks_pair_each_frequency_with_its_conjugate(size):
  positions = np.array([(r, c) for r in range(size) for c in range(size)])
  masks = spectra.removal_masks(size, size, positions)
  assert masks.shape == (size * size, size, size) and masks.dtype == np.float32
  for mask, (row, col) in zip(masks, positions):
    u, v = unshifted_index(row, size), unshifted_index(col, size)
    self_conjugate = (2 * u) % size == 0 and (2 * v) % size == 0
    assert (mask == 0).sum() == (1 if self_conjugate else 2)
    unshifted = np.fft.ifftshift(mask)
    assert unshifted[u, v] == 0 and unshifted[-u % size, -v % size] == 0
  # The self-conjugate frequencies: zero, and the Nyquist row/column of an even size.
  expected = 4 if size % 2 == 0 else 1
  assert sum((m == 0).sum() == 1 for m in masks) == expected


@pytest.mark.parametrize("shape", [(3, 8, 8, 3), (2, 7, 7, 2), (2, 6, 5, 1)])
def test_remove_frequencies_matches_numpy_image_by_image(shape):
  _, height, width, _ = shape
  images = np.random.default_rng(4).normal(size=shape)
  # Every frequency: row/column 0 of the unshifted spectrum (centred row H // 2), the
  # Nyquist row and column of even sizes (centred row 0), and all the others.
  positions = np.array([(r, c) for r in range(height) for c in range(width)])
  filtered = spectra.remove_frequencies(images, spectra.removal_masks(height, width, positions))
  assert filtered.shape == (len(positions),) + shape and filtered.dtype == tf.float64
  filtered = filtered.numpy()
  for k, (row, col) in enumerate(positions):
    for b, image in enumerate(images):
      np.testing.assert_allclose(filtered[k, b], numpy_remove(image, row, col), atol=1e-12)
  single = spectra.remove_frequencies(images.astype(np.float32),
                                      spectra.removal_masks(height, width, positions[:1])[0])
  assert single.dtype == tf.float32 and single.shape == (1,) + shape
  np.testing.assert_allclose(single[0], filtered[0], atol=1e-5)


def test_remove_frequencies_keeps_a_dfm_like_apply_mask():
  images = np.random.default_rng(8).normal(size=(2, 8, 8, 3)).astype(np.float32)
  importance = np.random.default_rng(9).uniform(size=(8, 8))
  dfm = spectra.dominant_frequency_map(importance, 0.2)
  np.testing.assert_allclose(spectra.remove_frequencies(images, dfm)[0],
                             frequency.apply_mask(images, dfm.astype(np.float32)), atol=1e-5)


def test_remove_frequencies_refuses_asymmetric_masks():
  mask = np.ones((1, 8, 8), np.float32)
  mask[0, 4, 5] = 0
  with pytest.raises(ValueError, match="conjugate partner"):
    spectra.remove_frequencies(np.zeros((1, 8, 8, 1)), mask)


def tiny_model(num_classes=3):
  keras.utils.set_random_seed(5)
  inputs = keras.Input((8, 8, 3))
  hidden = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
  hidden = keras.layers.Conv2D(6, 3, strides=2, activation="relu")(hidden)
  outputs = keras.layers.Dense(num_classes)(keras.layers.Flatten()(hidden))
  return keras.Model(inputs, outputs)


def numpy_mean_cross_entropy(logits, label):
  logits = np.asarray(logits, np.float64)
  log_softmax = logits - logits.max(1, keepdims=True)
  log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
  return -log_softmax[:, label].mean()


class CountingPredictor:
  """Calls a model on float32 images, recording the batch size of every call."""

  def __init__(self, model):
    self.model, self.sizes = model, []

  def __call__(self, images):
    self.sizes.append(int(images.shape[0]))
    return self.model(images, training=False)


def test_frequency_importance_equals_a_one_mask_at_a_time_loop(monkeypatch):
  model = tiny_model()
  rng = np.random.default_rng(6)
  images = rng.normal(size=(5, 8, 8, 3)).astype(np.float32)
  label = 1
  intact = numpy_mean_cross_entropy(model(images), label)
  reference = np.zeros((8, 8))
  for row in range(8):
    for col in range(8):
      removed = np.stack([numpy_remove(image.astype(np.float64), row, col) for image in images])
      reference[row, col] = numpy_mean_cross_entropy(model(removed.astype(np.float32)),
                                                     label) - intact
  assert np.ptp(reference) > 1e-3
  predictor = CountingPredictor(model)
  ffts = []
  rfft2d = tf.signal.rfft2d

  def counting_rfft2d(*args, **kwargs):
    ffts.append(args[0].shape)
    return rfft2d(*args, **kwargs)

  monkeypatch.setattr(tf.signal, "rfft2d", counting_rfft2d)
  importance = spectra.frequency_importance(predictor, images, label, chunk=5)
  assert ffts == [(5, 3, 8, 8)]  # one FFT of the images, reused for every removal
  pairs = (8 * 8 - 4) // 2 + 4  # 4 of the 8x8 frequencies are their own partner
  assert predictor.sizes == [5] + [5 * 5] * (pairs // 5) + [5 * (pairs % 5)]
  np.testing.assert_allclose(importance, reference, atol=2e-5)
  for fraction in (0.05, 0.1, 0.25):
    dfm = spectra.dominant_frequency_map(importance, fraction)
    np.testing.assert_array_equal(dfm, spectra.dominant_frequency_map(reference, fraction))
    assert math.ceil(fraction * 64) <= dfm.sum() <= math.ceil(fraction * 64) + 1


def pooled_model(channels, num_classes=3):
  """A model of images of any size: conv (ReLU), global average pool, dense."""
  keras.utils.set_random_seed(11)
  inputs = keras.Input((None, None, channels))
  hidden = keras.layers.Conv2D(5, 3, padding="same", activation="relu")(inputs)
  pooled = keras.layers.GlobalAveragePooling2D()(hidden)
  return keras.Model(inputs, keras.layers.Dense(num_classes)(pooled))


@pytest.mark.parametrize("shape", [(6, 5, 2), (7, 7, 3)])
def test_removal_after_an_affine_stem_equals_removal_from_the_images(shape):
  height, width, channels = shape
  model = pooled_model(channels)
  conv = model.layers[1]
  rest = keras.Model(conv.output, model.output)

  def stem(x):  # The convolution before its ReLU: affine in x.
    return conv.convolution_op(x, conv.kernel) + conv.bias

  def head(responses):
    return rest(tf.nn.relu(responses), training=False)

  images = np.random.default_rng(12).normal(size=(4, *shape)).astype(np.float32)
  label = 2
  intact = numpy_mean_cross_entropy(model(images), label)
  reference = np.zeros((height, width))
  for row in range(height):
    for col in range(width):
      removed = np.stack([numpy_remove(image.astype(np.float64), row, col) for image in images])
      reference[row, col] = numpy_mean_cross_entropy(model(removed.astype(np.float32)),
                                                     label) - intact
  assert np.ptp(reference) > 1e-4
  plain = spectra.frequency_importance(model, images, label, chunk=4)
  after_stem = spectra.frequency_importance(head, images, label, chunk=4, stem=stem)
  np.testing.assert_allclose(plain, reference, atol=2e-6)
  np.testing.assert_allclose(after_stem, reference, atol=2e-6)


def test_class_frequency_importance_equals_one_class_at_a_time():
  model = pooled_model(3, num_classes=4)
  rng = np.random.default_rng(13)
  images = rng.normal(size=(7, 6, 6, 3)).astype(np.float32)
  labels = np.array([0, 2, 0, 1, 2, 2, 0])  # class 3 has no image
  maps = spectra.class_frequency_importance(model, images, labels, 4, chunk=3)
  assert maps.shape == (4, 6, 6)
  for c in range(3):
    np.testing.assert_allclose(maps[c], spectra.frequency_importance(
        model, images[labels == c], c, chunk=5), atol=1e-6)
  assert np.isnan(maps[3]).all()
  with pytest.raises(ValueError, match=r"labels must be 7 ints in \[0, 4\)"):
    spectra.class_frequency_importance(model, images, labels + 2, 4)


def test_frequency_importance_scores_only_the_given_frequencies():
  model = tiny_model()
  images = np.random.default_rng(7).normal(size=(2, 8, 8, 3)).astype(np.float32)
  importance = spectra.frequency_importance(model, images, [0, 0],
                                            frequencies=np.array([[4, 5], [0, 0]]))
  scored = np.isfinite(importance)
  assert scored.sum() == 3  # (4, 5), its partner (4, 3), and the self-conjugate (0, 0)
  assert scored[4, 5] and scored[4, 3] and scored[0, 0]
  assert importance[4, 5] == importance[4, 3]


def test_dominant_frequency_map_keeps_the_top_fraction_symmetrically():
  importance = np.zeros((4, 4))
  importance[2, 3] = 5.0  # Frequency (0, 1); its partner (0, -1) sits at [2, 1].
  importance[0, 0] = 4.0  # The Nyquist corner, its own partner.
  importance[1, 1] = np.nan  # Not scored.
  dfm = spectra.dominant_frequency_map(importance, top_fraction=0.1)  # 2 of 15 scored
  expected = np.zeros((4, 4), bool)
  expected[2, 3] = expected[2, 1] = expected[0, 0] = True
  np.testing.assert_array_equal(dfm, expected)
  with pytest.raises(ValueError, match="top_fraction"):
    spectra.dominant_frequency_map(importance, 0)


def test_shortcut_rates_match_a_hand_computed_confusion():
  labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
  predictions = np.array([0, 1, 0, 1, 0, 2, 0, 1])
  # Confusion [true, predicted]: [[2, 1, 0], [1, 1, 0], [1, 1, 1]].
  tpr, fpr = spectra.shortcut_rates(predictions, labels, 3)
  np.testing.assert_allclose(tpr, [2 / 3, 1 / 2, 1 / 3])
  np.testing.assert_allclose(fpr, [2 / 5, 2 / 6, 0 / 5])
  logits = np.eye(3)[predictions] * 3.0 - 1.0
  np.testing.assert_allclose(spectra.shortcut_rates(logits, labels, 3), (tpr, fpr))
  np.testing.assert_array_equal(spectra.is_shortcut(tpr, fpr, min_tpr=0.5, max_fpr=0.4),
                                [True, True, False])
  tpr, fpr = spectra.shortcut_rates([0, 0], [0, 0], 2)
  assert tpr[0] == 1 and np.isnan(fpr[0]) and np.isnan(tpr[1]) and fpr[1] == 0
  assert not spectra.is_shortcut(tpr, fpr, 0.5, 0.5).any()


def test_class_band_fraction():
  dfm = np.zeros((4, 4), bool)
  dfm[0, :3] = True
  band = np.zeros((4, 4), bool)
  band[0, 1:] = True
  assert spectra.class_band_fraction(dfm, band) == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="keeps no frequency"):
    spectra.class_band_fraction(np.zeros((4, 4), bool), band)
