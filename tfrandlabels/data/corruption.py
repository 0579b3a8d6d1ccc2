"""Label and input corruption (Zhang et al. 2017; Maennel et al. 2020).

Every random choice is a stateless function of `(seed, index)`, where `index` is the
example's stable id from `tfrandlabels.data.load`. The corrupted data set is therefore
the same under any shuffling, sharding, worker count, epoch or process.
"""
import numpy as np
import tensorflow as tf

LABEL_MODES = ("uniform", "shuffle", "permute_classes")
INPUT_MODES = ("shuffled_pixels", "random_pixels", "gaussian")
# Salts separate the independent random streams drawn from one (seed, index) pair.
_SELECT, _DRAW, _PERMUTE = 1, 2, 3


def _check_fraction(fraction):
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"fraction={fraction!r} must be in [0, 1]")


def _check_mode(mode, allowed):
  if mode not in allowed:
    raise ValueError(f"mode={mode!r} is not one of {', '.join(allowed)}")


def _example_seed(seed, index, salt):
  """A stateless-op seed for one example and one random stream."""
  return tf.stack([tf.cast(seed, tf.int64) * 7919 + salt, tf.cast(index, tf.int64)])


def is_selected(seed, index, fraction):
  """Whether the example with this index is corrupted: a Bernoulli(fraction) draw."""
  u = tf.random.stateless_uniform([], _example_seed(seed, index, _SELECT), dtype=tf.float32)
  return u < fraction


def _class_permutation(seed, num_classes):
  return tf.random.experimental.stateless_shuffle(
      tf.range(num_classes, dtype=tf.int64), seed=[seed, _PERMUTE])


def _shuffle_table(ds, fraction, seed):
  """Maps index -> new label for `shuffle`: selected labels permuted among themselves.

  Exactly round(fraction * N) examples are selected, so the class counts of the data
  set are preserved exactly. Reads the (index, label) pairs once.
  """
  pairs = np.array([(int(i), int(l)) for i, l in ds.map(
      lambda e: (e["index"], e["label"])).as_numpy_iterator()], dtype=np.int64)
  pairs = pairs[np.argsort(pairs[:, 0])]  # Independent of the order ds was read in.
  rng = np.random.default_rng([seed, _PERMUTE])
  chosen = np.sort(rng.permutation(len(pairs))[:int(round(fraction * len(pairs)))])
  labels = pairs[:, 1].copy()
  labels[chosen] = labels[chosen][rng.permutation(len(chosen))]
  return tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(pairs[:, 0]), tf.constant(labels)),
      default_value=tf.constant(-1, tf.int64))


def corrupt_labels(ds, *, fraction, num_classes, seed, mode="uniform"):
  """Replaces labels with random ones; keeps the true label as `clean_label`.

  Args:
    ds: dataset of dicts with int64 `label` and `index`.
    fraction: share of examples whose label is corrupted, in [0, 1].
    num_classes: number of classes of the new labels. For `uniform` it may differ
      from the data set's own (the paper pretrains with k random classes).
    seed: integer seed; the new label is a pure function of (seed, index).
    mode: `uniform` (each example independently with probability `fraction` gets a
      uniform draw over `num_classes`, which may equal its old label, as in Zhang et
      al.), `shuffle` (exactly round(fraction * N) examples have their labels
      permuted among themselves: class counts preserved; reads the labels once), or
      `permute_classes` (selected examples' labels mapped through one fixed random
      bijection of the classes).

  Returns:
    The dataset with corrupted `label` and the original as `clean_label`.
  """
  _check_fraction(fraction)
  _check_mode(mode, LABEL_MODES)
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
    raise ValueError(f"num_classes={num_classes!r} must be an integer >= 2")
  if mode == "shuffle":
    table = _shuffle_table(ds, fraction, seed)

    def relabel(e):
      return table.lookup(e["index"])
  elif mode == "uniform":
    def relabel(e):
      draw = tf.random.stateless_uniform([], _example_seed(seed, e["index"], _DRAW),
                                         minval=0, maxval=num_classes, dtype=tf.int64)
      return tf.where(is_selected(seed, e["index"], fraction), draw, e["label"])
  else:
    permutation = _class_permutation(seed, num_classes)

    def relabel(e):
      return tf.where(is_selected(seed, e["index"], fraction),
                      tf.gather(permutation, e["label"]), e["label"])

  def apply(e):
    return {**e, "label": relabel(e), "clean_label": e["label"]}

  return ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def realized_fraction(ds):
  """Share of examples whose `label` differs from `clean_label` (one pass)."""
  changed = ds.map(lambda e: tf.cast(e["label"] != e["clean_label"], tf.int64))
  total, count = changed.reduce((tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
                                lambda acc, c: (acc[0] + c, acc[1] + 1))
  return float(total) / max(int(count), 1)


def channel_moments(ds):
  """Per-channel mean and std of the uint8 images of ds (one pass), as float32."""
  def stats(e):
    x = tf.reshape(tf.cast(e["image"], tf.float64), [-1, tf.shape(e["image"])[-1]])
    return tf.reduce_sum(x, 0), tf.reduce_sum(x * x, 0), tf.cast(tf.shape(x)[0], tf.float64)
  channels = ds.element_spec["image"].shape[-1]
  total, squares, count = ds.map(stats).reduce(
      (tf.zeros([channels], tf.float64), tf.zeros([channels], tf.float64),
       tf.constant(0., tf.float64)),
      lambda acc, s: (acc[0] + s[0], acc[1] + s[1], acc[2] + s[2]))
  mean = total / count
  return (tf.cast(mean, tf.float32).numpy(),
          tf.cast(tf.sqrt(squares / count - mean * mean), tf.float32).numpy())


def _permute_pixels(image, seed):
  shape = tf.shape(image)
  pixels = tf.reshape(image, [shape[0] * shape[1], shape[2]])
  order = tf.random.experimental.stateless_shuffle(tf.range(shape[0] * shape[1]), seed=seed)
  return tf.reshape(tf.gather(pixels, order), shape)


def corrupt_image(image, index, *, mode, fraction, seed, mean=None, std=None):
  """The image of one example after input corruption (unchanged if not selected).

  A pure function of (seed, index): see `corrupt_inputs` for the modes. `mean` and
  `std` (per channel, uint8 units) are needed by `gaussian` only. Works on uint8 or
  float images in uint8 units; returns the input's dtype.
  """
  if mode == "shuffled_pixels":
    new = _permute_pixels(image, tf.constant([seed, _PERMUTE], tf.int64))
  elif mode == "random_pixels":
    new = _permute_pixels(image, _example_seed(seed, index, _PERMUTE))
  else:
    noise = tf.random.stateless_normal(tf.shape(image), _example_seed(seed, index, _DRAW))
    new = tf.cast(tf.clip_by_value(tf.round(noise * std + mean), 0, 255), image.dtype)
  return tf.where(is_selected(seed, index, fraction), new, image)


def corrupt_inputs(ds, *, mode, fraction, seed, mean=None, std=None):
  """Corrupts the images of selected examples (Zhang et al. 2017, Section 2).

  Args:
    ds: dataset of dicts with uint8 `image` [H, W, C] and int64 `index`.
    mode: `shuffled_pixels` (one pixel permutation, fixed by `seed`, for every
      selected image; channels move together), `random_pixels` (a fresh permutation
      per image), or `gaussian` (every pixel drawn from a normal with the data set's
      per-channel mean and std, rounded and clipped to uint8).
    fraction: share of examples corrupted, selected per example from (seed, index).
    seed: integer seed.
    mean, std: per-channel moments for `gaussian`; computed from ds when omitted.

  Returns:
    The dataset with corrupted `image`.
  """
  _check_fraction(fraction)
  _check_mode(mode, INPUT_MODES)
  if mode == "gaussian" and (mean is None or std is None):
    mean, std = channel_moments(ds)
  return ds.map(lambda e: {**e, "image": corrupt_image(
      e["image"], e["index"], mode=mode, fraction=fraction, seed=seed, mean=mean, std=std)},
                num_parallel_calls=tf.data.AUTOTUNE)
