"""Planted-band data sets: determinism, format, planted energy, no nuisance shortcut."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfrandlabels import data
from tfrandlabels.analysis import spectra
from tfrandlabels.data import frequency
from tfrandlabels.data import planted

NAMES = ("planted_low", "planted_mid", "planted_high")


@pytest.fixture(scope="module")
def low_dir(tmp_path_factory):
  """A data_dir with `planted_low` prepared through TFDS (the other two are generated)."""
  data_dir = str(tmp_path_factory.mktemp("planted"))
  data.load("planted_low", "test", data_dir)
  return data_dir


def load_arrays(name, split, data_dir):
  """(images, labels, index) of a whole split, read in one batch."""
  batch = next(data.load(name, split, data_dir).batch(10000).as_numpy_iterator())
  return batch["image"], batch["label"], batch["index"]


@pytest.fixture(scope="module")
def low_test(low_dir):
  return load_arrays("planted_low", "test", low_dir)


@pytest.fixture(scope="module")
def generated_test():
  """name -> (images, labels) of the generated test split of every variant."""
  return {name: planted.generate_images(name, "test") for name in NAMES}


def sorted_by_content(images, labels):
  order = sorted(range(len(images)), key=lambda i: (labels[i], images[i].tobytes()))
  return images[order], labels[order]


def test_loads_are_deterministic_and_hold_the_generated_images(low_dir, low_test,
                                                               generated_test):
  first, second = low_test, load_arrays("planted_low", "test", low_dir)
  for one, other in zip(first, second):
    np.testing.assert_array_equal(one, other)
  np.testing.assert_array_equal(first[2], np.arange(1000))
  stored = sorted_by_content(*first[:2])
  for stored_array, generated_array in zip(stored,
                                           sorted_by_content(*generated_test["planted_low"])):
    np.testing.assert_array_equal(stored_array, generated_array)


def test_generation_is_deterministic_and_variants_differ(generated_test):
  images, labels = planted.generate_images("planted_high", "test")
  np.testing.assert_array_equal(images, generated_test["planted_high"][0])
  np.testing.assert_array_equal(labels, generated_test["planted_high"][1])
  assert not np.array_equal(images, generated_test["planted_mid"][0])


def test_shape_dtype_sizes_and_metadata(low_dir, low_test):
  images, labels, _ = low_test
  assert images.shape == (1000, 32, 32, 3) and images.dtype == np.uint8
  assert labels.dtype == np.int64
  np.testing.assert_array_equal(np.bincount(labels), [100] * 10)
  splits = tfds.builder("planted_low", data_dir=low_dir).info.splits
  assert {name: split.num_examples for name, split in splits.items()} == {
      "train": 5000, "test": 1000}
  assert data.num_classes("planted_low", low_dir) == 10
  metadata = tfds.builder("planted_low", data_dir=low_dir).info.metadata
  assert metadata["band_radii"] == [1.0, 5.0]
  from_metadata = np.zeros((10, 32, 32), bool)
  for label, pairs in enumerate(metadata["class_frequencies"]):
    rows, cols = np.array(pairs).T
    partner_rows, partner_cols = (32 - rows) % 32, (32 - cols) % 32
    from_metadata[label, rows, cols] = from_metadata[label, partner_rows, partner_cols] = True
  np.testing.assert_array_equal(from_metadata, planted.planted_bands("planted_low"))


@pytest.mark.parametrize("name, r_min, r_max", [
    ("planted_low", 1, 5), ("planted_mid", 5, 10), ("planted_high", 10, 15)])
def test_bands_partition_the_radial_band_symmetrically(name, r_min, r_max):
  bands = planted.planted_bands(name)
  assert bands.shape == (10, 32, 32) and bands.dtype == bool
  assert bands.sum(axis=0).max() == 1  # Disjoint.
  radius = frequency.radius_grid(32)
  np.testing.assert_array_equal(bands.any(axis=0), (radius >= r_min) & (radius < r_max))
  np.testing.assert_array_equal(bands, np.roll(bands[:, ::-1, ::-1], 1, axis=(1, 2)))
  sizes = bands.sum(axis=(1, 2))
  assert sizes.max() - sizes.min() <= 2  # One pair more or less.


def class_mean_amplitudes(images, labels):
  """Numpy E_c: mean over the class's images of |fft2| per channel, centred."""
  amplitudes = np.abs(np.fft.fftshift(np.fft.fft2(images.astype(np.float64), axes=(1, 2)),
                                      axes=(1, 2)))
  return np.stack([amplitudes[labels == c].mean(axis=0) for c in range(10)])


def assert_own_band_is_strongest(means, bands):
  # energy[c, k]: energy of class k's mean spectrum inside class c's planted band.
  energy = np.array([[(means[k][band] ** 2).sum() for k in range(10)] for band in bands])
  np.testing.assert_array_equal(energy.argmax(axis=1), np.arange(10))
  others = np.where(np.eye(10, dtype=bool), 0, energy).max(axis=1)
  assert np.all(np.diag(energy) > 1.5 * others)


def test_class_mean_spectra_of_the_stored_data_match_numpy(low_test):
  images, labels, _ = low_test
  batches = [{"image": images[i:i + 300], "label": labels[i:i + 300]}
             for i in range(0, len(images), 300)]
  np.testing.assert_allclose(spectra.class_mean_spectra(batches, 10),
                             class_mean_amplitudes(images, labels), rtol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_planted_band_carries_its_class_energy(name, generated_test):
  images, labels = generated_test[name]
  assert_own_band_is_strongest(class_mean_amplitudes(images, labels), planted.planted_bands(name))


@pytest.mark.parametrize("name", NAMES)
def test_classes_share_mean_colour_and_contrast(name, generated_test):
  images, labels = generated_test[name]
  pixels = images.astype(np.float64)
  colours, contrasts = pixels.mean(axis=(1, 2)), pixels.std(axis=(1, 2, 3))
  class_colours = np.stack([colours[labels == c].mean(axis=0) for c in range(10)])
  class_contrasts = np.array([contrasts[labels == c].mean() for c in range(10)])
  # Per-class means agree to a small fraction of their spread over images.
  assert np.ptp(class_colours, axis=0).max() < 0.02 * colours.std(axis=0).min()
  assert np.ptp(class_contrasts) < 0.05 * contrasts.std()
  # A nearest-centroid classifier on these statistics stays near chance (10%).
  features = np.concatenate([colours, contrasts[:, None]], axis=1)
  centroids = np.stack([features[labels == c].mean(axis=0) for c in range(10)])
  scaled = (features[:, None] - centroids[None]) / features.std(axis=0)
  accuracy = np.mean((scaled ** 2).sum(axis=-1).argmin(axis=1) == labels)
  assert accuracy < 0.2


def test_unknown_variant_is_refused():
  with pytest.raises(ValueError, match="planted_low, planted_mid, planted_high"):
    planted.planted_bands("planted_top")
