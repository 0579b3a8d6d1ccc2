"""Label and input corruption: exact semantics and independence of order and sharding."""
import numpy as np
import pytest
import tensorflow as tf

from tfrandlabels import data

N, K = 2000, 10


def _dataset(n=N, image_shape=(1, 1, 1)):
  images = np.zeros((n,) + image_shape, np.uint8)
  return tf.data.Dataset.from_tensor_slices({
      "image": images, "label": np.arange(n, dtype=np.int64) % K,
      "index": np.arange(n, dtype=np.int64)})


def _labels(ds):
  """index -> (label, clean_label) for every example of ds."""
  return {int(e["index"]): (int(e["label"]), int(e["clean_label"]))
          for e in ds.as_numpy_iterator()}


@pytest.mark.parametrize("mode", ["uniform", "shuffle", "permute_classes"])
def test_labels_do_not_depend_on_order_or_sharding(mode):
  n = 400  # Each pass reads the data set example by example in Python.
  kwargs = dict(fraction=0.6, num_classes=K, seed=3, mode=mode)
  reference = _labels(data.corrupt_labels(_dataset(n), **kwargs))
  for shuffle_seed in (1, 2):
    shuffled = _dataset(n).shuffle(n, seed=shuffle_seed)
    assert _labels(data.corrupt_labels(shuffled, **kwargs)) == reference
  sharded = {}
  for i in range(4):
    sharded.update(_labels(data.corrupt_labels(_dataset(n), **kwargs).shard(4, i)))
  assert sharded == reference
  other_seed = _labels(data.corrupt_labels(_dataset(n), **{**kwargs, "seed": 4}))
  assert other_seed != reference


def test_uniform_changes_labels_at_the_binomial_rate():
  fraction = 0.5
  ds = data.corrupt_labels(_dataset(), fraction=fraction, num_classes=K, seed=0, mode="uniform")
  labels = np.array(list(_labels(ds).values()))
  # A selected label is redrawn uniformly, so it stays the same with probability 1/K.
  p = fraction * (1 - 1 / K)
  changed = np.mean(labels[:, 0] != labels[:, 1])
  assert abs(changed - p) < 4 * np.sqrt(p * (1 - p) / N)
  assert data.realized_fraction(ds) == pytest.approx(changed)
  counts = np.bincount(labels[:, 0], minlength=K)
  assert counts.min() > 0.8 * N / K


def test_uniform_with_fewer_random_classes():
  ds = data.corrupt_labels(_dataset(), fraction=1.0, num_classes=3, seed=0, mode="uniform")
  labels = np.array([v[0] for v in _labels(ds).values()])
  assert set(labels) == {0, 1, 2}
  assert np.abs(np.bincount(labels) / N - 1 / 3).max() < 0.05


def test_shuffle_preserves_class_counts_and_selects_exactly():
  fraction = 0.3
  # All labels distinct (label = index): a relabelled example is exactly a moved one.
  ds = tf.data.Dataset.from_tensor_slices({
      "image": np.zeros((N, 1, 1, 1), np.uint8), "label": np.arange(N, dtype=np.int64),
      "index": np.arange(N, dtype=np.int64)})
  labels = np.array(list(_labels(data.corrupt_labels(
      ds, fraction=fraction, num_classes=N, seed=5, mode="shuffle")).values()))
  np.testing.assert_array_equal(np.sort(labels[:, 0]), np.arange(N))
  moved = np.sum(labels[:, 0] != labels[:, 1])
  selected = round(fraction * N)
  # A uniform permutation of the selected labels has ~1 fixed point on average.
  assert selected - 5 <= moved <= selected


def test_shuffle_keeps_per_class_counts():
  ds = data.corrupt_labels(_dataset(), fraction=0.7, num_classes=K, seed=1, mode="shuffle")
  labels = np.array(list(_labels(ds).values()))
  np.testing.assert_array_equal(np.bincount(labels[:, 0]), np.bincount(labels[:, 1]))


def test_permute_classes_is_one_bijection():
  ds = data.corrupt_labels(_dataset(), fraction=1.0, num_classes=K, seed=2,
                           mode="permute_classes")
  pairs = set(_labels(ds).values())
  mapping = dict((clean, new) for new, clean in pairs)
  assert len(pairs) == K and sorted(mapping.values()) == list(range(K))
  assert any(clean != new for clean, new in mapping.items())


@pytest.mark.parametrize("kwargs, message", [
    (dict(fraction=1.5), "fraction=1.5 must be in"),
    (dict(fraction=-0.1), "fraction=-0.1 must be in"),
    (dict(num_classes=1), "num_classes=1 must be an integer >= 2"),
    (dict(mode="swap"), "mode='swap' is not one of uniform, shuffle, permute_classes"),
])
def test_bad_label_corruption_arguments(kwargs, message):
  args = {"fraction": 0.5, "num_classes": K, "seed": 0, "mode": "uniform", **kwargs}
  with pytest.raises(ValueError, match=message):
    data.corrupt_labels(_dataset(), **args)


def _coded_images(n, size=4):
  """Images whose pixels are distinct codes: a permutation is readable from them."""
  codes = np.arange(size * size, dtype=np.uint8).reshape(size, size, 1)
  images = np.stack([np.concatenate([codes, codes + 100, codes * 0 + i % 256], -1)
                     for i in range(n)]).astype(np.uint8)
  return tf.data.Dataset.from_tensor_slices({
      "image": images, "label": np.zeros(n, np.int64), "index": np.arange(n, dtype=np.int64)})


def _orders(ds):
  return [e["image"][..., 0].ravel() for e in ds.as_numpy_iterator()]


def test_shuffled_pixels_uses_one_permutation_for_all_images():
  orders = _orders(data.corrupt_inputs(_coded_images(20), mode="shuffled_pixels",
                                       fraction=1.0, seed=0))
  assert all(np.array_equal(o, orders[0]) for o in orders)
  assert sorted(orders[0]) == list(range(16)) and list(orders[0]) != list(range(16))
  for e in data.corrupt_inputs(_coded_images(20), mode="shuffled_pixels", fraction=1.0,
                               seed=0).as_numpy_iterator():
    # Channels of a pixel move together.
    np.testing.assert_array_equal(e["image"][..., 1], e["image"][..., 0] + 100)


def test_random_pixels_permutes_each_image_differently_and_deterministically():
  ds = data.corrupt_inputs(_coded_images(20), mode="random_pixels", fraction=1.0, seed=0)
  orders = _orders(ds)
  assert all(sorted(o) == list(range(16)) for o in orders)
  assert len({tuple(o) for o in orders}) == 20
  reordered = data.corrupt_inputs(_coded_images(20).shuffle(20, seed=9), mode="random_pixels",
                                  fraction=1.0, seed=0)
  by_index = {int(e["index"]): e["image"] for e in reordered.as_numpy_iterator()}
  for e in ds.as_numpy_iterator():
    np.testing.assert_array_equal(by_index[int(e["index"])], e["image"])


def test_input_fraction_is_a_per_example_bernoulli_draw():
  ds = data.corrupt_inputs(_coded_images(400), mode="random_pixels", fraction=0.25, seed=7)
  changed = [list(o) != list(range(16)) for o in _orders(ds)]
  assert abs(np.mean(changed) - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 400)


def test_gaussian_matches_the_data_set_moments():
  rng = np.random.default_rng(0)
  images = np.clip(rng.normal([60, 120, 200], [10, 20, 30], (300, 8, 8, 3)), 0, 255)
  ds = tf.data.Dataset.from_tensor_slices({
      "image": images.astype(np.uint8), "label": np.zeros(300, np.int64),
      "index": np.arange(300, dtype=np.int64)})
  noisy = np.stack([e["image"] for e in data.corrupt_inputs(
      ds, mode="gaussian", fraction=1.0, seed=0).as_numpy_iterator()]).astype(np.float64)
  np.testing.assert_allclose(noisy.mean((0, 1, 2)), images.astype(np.uint8).mean((0, 1, 2)),
                             atol=1.0)
  np.testing.assert_allclose(noisy.std((0, 1, 2)), images.astype(np.uint8).std((0, 1, 2)),
                             rtol=0.05)
  # Pixels are independent noise, unlike the source images.
  assert abs(np.corrcoef(noisy[..., 0].reshape(300, -1).T)[0, 1]) < 0.2


def test_bad_input_corruption_arguments():
  with pytest.raises(ValueError, match="mode='blur' is not one of"):
    data.corrupt_inputs(_coded_images(2), mode="blur", fraction=1.0, seed=0)
  with pytest.raises(ValueError, match="fraction=2 must be in"):
    data.corrupt_inputs(_coded_images(2), mode="random_pixels", fraction=2, seed=0)
