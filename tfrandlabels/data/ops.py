"""Batch ops: small factories that return `fn(batch) -> batch` for the input pipeline.

`make_input_fn(..., batch_ops=[...])` applies them in order after batching, in graph
and vectorized over the batch (a batch is a dict {"image": [B, H, W, C], "label",
"index"}). Three kinds, each also reachable by name from a flag:

  normalize(mean, std)         uint8 units -> float32: (x - mean) / std per channel
  frequency_filter("low_pass:8" | "high_pass:8" | "band_pass:4-12" | "band_stop:4-12")
  input_corruption("shuffled_pixels:0.5" | "random_pixels:0.5" | "gaussian:0.5", seed)

Corruption runs on images in uint8 units, before `normalize`; frequency filters run
on normalized float images, after it (`image_ops` puts them in that order).
"""
import numpy as np
import tensorflow as tf

from tfrandlabels.data import corruption
from tfrandlabels.data import frequency

FILTER_FORMS = "low_pass:R, high_pass:R, band_pass:R1-R2 or band_stop:R1-R2 (radii in pixels)"
CORRUPTION_FORM = f"MODE:FRACTION with MODE one of {', '.join(corruption.INPUT_MODES)}"
SHIFTS = ("noise", "blur", "contrast")
SHIFT_FORM = ("noise:STD (Gaussian noise, STD in (0, 1] of the pixel range), blur:SIGMA "
              "(Gaussian blur, SIGMA > 0 pixels) or contrast:FACTOR (FACTOR > 0, below 1 "
              "lowers the contrast)")


def normalize(mean=None, std=None):
  """Casts to float32 and standardizes per channel; default scales to [0, 1]."""
  if (mean is None) != (std is None):
    raise ValueError("mean and std must be given together (per-channel, uint8 units)")
  shift = np.zeros(1, np.float32) if mean is None else np.asarray(mean, np.float32)
  scale = np.full(1, 255.0, np.float32) if std is None else np.asarray(std, np.float32)
  if np.any(scale <= 0):
    raise ValueError(f"std={std!r} must be positive")

  def op(batch):
    return {**batch, "image": (tf.cast(batch["image"], tf.float32) - shift) / scale}

  return op


def parse_filter(text):
  """'band_pass:4-12' -> ('band_pass', 4.0, 12.0); low/high pass give (kind, 0, R)."""
  kind, _, radii = str(text).partition(":")
  try:
    values = [float(r) for r in radii.split("-")]
  except ValueError:
    values = []
  expected = 1 if kind in ("low_pass", "high_pass") else 2
  if kind not in frequency.FILTERS or len(values) != expected or min(values) < 0 or (
      expected == 2 and values[0] > values[1]):
    raise ValueError(f"filter={text!r} must be {FILTER_FORMS}")
  return (kind, 0.0, values[0]) if expected == 1 else (kind, values[0], values[1])


def frequency_filter(text):
  """A batch op that keeps the frequencies the named filter passes (see `frequency`)."""
  kind, r_min, r_max = parse_filter(text)

  def op(batch):
    images = batch["image"]
    mask = frequency.make_mask(kind, tuple(images.shape[1:3]), r_min, r_max)
    return {**batch, "image": frequency.apply_mask(images, mask)}

  return op


def _kind_and_number(text):
  """'name:0.5' -> ('name', 0.5); a missing or malformed number is nan."""
  kind, _, value = str(text).partition(":")
  try:
    return kind, float(value)
  except ValueError:
    return kind, float("nan")


def parse_corruption(text):
  """'shuffled_pixels:0.5' -> ('shuffled_pixels', 0.5)."""
  mode, value = _kind_and_number(text)
  if mode not in corruption.INPUT_MODES or not 0 <= value <= 1:
    raise ValueError(f"corruption={text!r} must be {CORRUPTION_FORM}, FRACTION in [0, 1]")
  return mode, value


def input_corruption(text, seed, mean=None, std=None):
  """A batch op corrupting the selected examples' images, keyed by (seed, index).

  The same corruption as `corruption.corrupt_inputs`, image by image; `gaussian`
  needs the data's per-channel `mean` and `std` in uint8 units.
  """
  mode, fraction = parse_corruption(text)
  if mode == "gaussian" and (mean is None or std is None):
    raise ValueError("corruption 'gaussian' needs the data's per-channel mean and std")

  def corrupt(args):
    image, index = args
    return corruption.corrupt_image(image, index, mode=mode, fraction=fraction, seed=seed,
                                    mean=mean, std=std)

  def op(batch):
    images = tf.map_fn(corrupt, (batch["image"], batch["index"]),
                       fn_output_signature=batch["image"].dtype)
    return {**batch, "image": images}

  return op


def parse_shift(text):
  """'blur:1.5' -> ('blur', 1.5)."""
  kind, number = _kind_and_number(text)
  if kind not in SHIFTS or not 0 < number < np.inf or (kind == "noise" and number > 1):
    raise ValueError(f"shift={text!r} must be {SHIFT_FORM}")
  return kind, number


def _blur(images, sigma):
  """Separable Gaussian blur of float images [B, H, W, C], edges reflected."""
  radius = int(min(np.ceil(3 * sigma), min(images.shape[1:3]) - 1))
  offsets = np.arange(-radius, radius + 1)
  weights = np.exp(-offsets ** 2 / (2 * sigma ** 2))
  weights = np.tile((weights / weights.sum())[:, None, None], [1, images.shape[-1], 1])
  padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
  columns = tf.nn.depthwise_conv2d(padded, tf.constant(weights[:, None], tf.float32),
                                   [1, 1, 1, 1], "VALID")
  return tf.nn.depthwise_conv2d(columns, tf.constant(weights[None], tf.float32),
                                [1, 1, 1, 1], "VALID")


def distribution_shift(text, seed=0):
  """A batch op that moves images out of the training distribution, in uint8 units.

  `noise:STD` adds Gaussian noise of std STD * 255, drawn per example from (seed,
  index); `blur:SIGMA` blurs with a Gaussian of SIGMA pixels; `contrast:FACTOR` scales
  each channel's deviation from its image mean (`tf.image.adjust_contrast`). The
  result is float32 in uint8 units, clipped to [0, 255], ready for `normalize`.
  """
  kind, value = parse_shift(text)

  def op(batch):
    images = tf.cast(batch["image"], tf.float32)
    if kind == "noise":
      def draw(index):
        return tf.random.stateless_normal(tf.shape(images)[1:],
                                          tf.stack([tf.constant(seed, tf.int64), index]))
      images += 255.0 * value * tf.map_fn(draw, batch["index"],
                                          fn_output_signature=tf.float32)
    elif kind == "blur":
      images = _blur(images, value)
    else:
      images = tf.image.adjust_contrast(images, value)
    return {**batch, "image": tf.clip_by_value(images, 0.0, 255.0)}

  return op


def image_ops(*, mean, std, corruption_spec=None, moments=(None, None), filter_spec=None,
              seed=0):
  """The standard op list: corruption (uint8 units), normalization, frequency filter.

  `mean`, `std` normalize; `moments` are the data's per-channel (mean, std) that the
  `gaussian` corruption draws pixels from.
  """
  ops = []
  if corruption_spec:
    ops.append(input_corruption(corruption_spec, seed, *moments))
  ops.append(normalize(mean, std))
  if filter_spec:
    ops.append(frequency_filter(filter_spec))
  return ops
