"""`planted_low`, `planted_mid`, `planted_high`: classes told apart by planted frequencies.

Data sets for testing frequency-shortcut analyses (Wang et al., ICCV 2023): the only
difference between the classes is known, so a dominant frequency map (DFM) can be
checked against it. Wang et al. did not release their synthetic generator; this one
is ours. 10 classes, 32x32x3 uint8 images, 5,000 train and 1,000 test examples, all
generated deterministically from a fixed seed in a few seconds.

An image is a natural-looking background plus its class's pattern:

* Background: colour pink noise, with an amplitude spectrum falling as 1/f like that
  of natural images: a luminance field shared by the three channels plus a weaker
  independent field per channel (`CHROMA`), each drawn afresh for every image, with
  its mean removed and scaled to unit variance.
* Pattern: a sum of cosines, one per frequency pair of the class's planted set, each
  with a random phase per image, added to all three channels. The variant's radial
  band (`BANDS`: low 1 <= r < 5, mid 5 <= r < 10, high 10 <= r < 15 cycles per image)
  is split into 10 angular sectors with (nearly) equal numbers of frequency pairs;
  class c owns sector c. Within a variant every pattern has the same pixel variance,
  and at its frequencies it carries `SIGNAL_TO_BACKGROUND` times the background's
  expected power there, so it stands out in the spectrum in every band; in pixels its
  std is about 14 grey levels (low), 10 (mid) and 7.5 (high) of the image's 25. A
  three-layer CNN trained for 6 epochs (Adam) reached 85% (low), 97% (mid) and 95%
  (high) test accuracy, and three quarters of its 5% DFMs on `planted_high` fell in
  the class's own sector.
* Nuisances that must not tell the classes apart: background plus pattern is scaled
  to a pixel std of `CONTRAST` times a gain, and shifted to a mean colour; the gain
  and the mean colour are drawn once per slot i and reused for the i-th image of
  every class, so every class has exactly the same mean colours and contrasts (up to
  rounding to uint8). The pattern has zero mean and the same variance in every class.

`planted_bands(name)` returns each class's planted frequencies as centred [H, W]
masks (the layout of `tfrandlabels.data.frequency`), and the prepared data set keeps
them in its TFDS metadata (`builder.info.metadata`).
"""
import numpy as np
import tensorflow_datasets as tfds

from tfrandlabels.data import frequency

IMAGE_SIZE = 32
NUM_CLASSES = 10
SPLIT_SIZES = {"train": 5000, "test": 1000}
# Radial band of each variant, r_min <= r < r_max in cycles per image.
BANDS = {"low": (1.0, 5.0), "mid": (5.0, 10.0), "high": (10.0, 15.0)}
SIGNAL_TO_BACKGROUND = 8.0  # Pattern power over expected background power, per frequency.
CHROMA = 0.35  # Weight of each channel's own pink noise next to the shared luminance.
CONTRAST = 25.0  # Pixel std of an image (uint8 units) at unit gain.
GREY_RANGE = (100.0, 156.0)  # Mean grey level of an image.
TINT = 12.0  # Largest per-channel offset of the mean colour from grey.
GAIN_RANGE = (0.8, 1.2)  # Contrast gain of an image.
SEED = 20230723
_SPLIT_SEEDS = {"train": 0, "test": 1}


def _band_name(name):
  """'planted_low' -> 'low', or raises naming the accepted data sets."""
  band = name[len("planted_"):] if name.startswith("planted_") else None
  if band not in BANDS:
    raise ValueError(f"name={name!r} is not a planted data set; use one of "
                     f"{', '.join('planted_' + b for b in BANDS)}")
  return band


def _signed_frequencies(size):
  """Signed frequency of each centred row (or column): index - size // 2."""
  return np.arange(size) - size // 2


def class_frequencies(name):
  """The planted frequency pairs of each class, one centred (row, column) per pair.

  Args:
    name: `planted_low`, `planted_mid` or `planted_high`.

  Returns:
    A list of NUM_CLASSES int arrays [n_c, 2]; the partner of each pair, its negative
    frequency, is implied.
  """
  r_min, r_max = BANDS[_band_name(name)]
  radius = frequency.radius_grid(IMAGE_SIZE)
  rows, cols = np.nonzero((radius >= r_min) & (radius < r_max))
  fy, fx = _signed_frequencies(IMAGE_SIZE)[rows], _signed_frequencies(IMAGE_SIZE)[cols]
  # One member per pair: the one with angle in [0, pi). The bands stay below the
  # Nyquist frequency, so no frequency is its own partner.
  angle = np.arctan2(fy, fx)
  upper = (angle >= 0) & (angle < np.pi)
  order = np.lexsort((radius[rows, cols][upper], angle[upper]))
  pairs = np.stack([rows[upper], cols[upper]], axis=1)[order]
  return np.array_split(pairs, NUM_CLASSES)


def planted_bands(name):
  """Each class's planted frequencies as centred masks, bool [NUM_CLASSES, H, W].

  Both members of every pair are set, so each mask is conjugate-symmetric.
  """
  masks = np.zeros((NUM_CLASSES, IMAGE_SIZE, IMAGE_SIZE), np.float32)
  for label, pairs in enumerate(class_frequencies(name)):
    masks[label, pairs[:, 0], pairs[:, 1]] = 1
  return np.stack([np.asarray(frequency.symmetrize(mask)) > 0 for mask in masks])


def _background_power():
  """Expected share of the background's power at each centred frequency, [H, W]."""
  radius = frequency.radius_grid(IMAGE_SIZE).astype(np.float64)
  power = np.where(radius > 0, 1.0 / np.maximum(radius, 1.0) ** 2, 0.0)
  return power / power.sum()


def _pink_noise(rng, count, channels):
  """Zero-mean fields [count, H, W, channels] with a 1/f amplitude spectrum."""
  white = rng.standard_normal((count, channels, IMAGE_SIZE, IMAGE_SIZE), np.float32)
  # The real FFT keeps columns 0..W // 2 of the unshifted spectrum.
  amplitude = np.fft.ifftshift(np.sqrt(_background_power()))[:, :IMAGE_SIZE // 2 + 1]
  fields = np.fft.irfft2(np.fft.rfft2(white) * amplitude.astype(np.float32),
                         s=(IMAGE_SIZE, IMAGE_SIZE))
  return np.moveaxis(fields, 1, -1)


def _backgrounds(rng, count):
  """Colour pink-noise backgrounds [count, H, W, 3], zero mean, unit std per image."""
  noise = _pink_noise(rng, count, 4)
  fields = noise[..., :1] + CHROMA * noise[..., 1:]
  fields -= fields.mean(axis=(1, 2), keepdims=True)
  return fields / fields.std(axis=(1, 2, 3), keepdims=True)


def _pattern_variance(pairs_per_class):
  """Pixel variance of every class's pattern, relative to the background's."""
  power = _background_power()
  # Share of the background power at each class's frequencies (both pair members).
  shares = [2 * power[pairs[:, 0], pairs[:, 1]].sum() for pairs in pairs_per_class]
  return SIGNAL_TO_BACKGROUND * float(np.mean(shares))


def _patterns(rng, pairs, variance, count):
  """`count` patterns [count, H, W]: cosines at `pairs`, random phases, given variance.

  Amplitudes follow the background's 1/f spectrum, so every frequency of the class
  stands out by about the same factor; distinct frequencies are orthogonal on the
  grid, so the pattern's variance is `variance` whatever the phases.
  """
  power = _background_power()[pairs[:, 0], pairs[:, 1]]
  amplitudes = np.sqrt(2 * variance * power / power.sum())
  fy = _signed_frequencies(IMAGE_SIZE)[pairs[:, 0]]
  fx = _signed_frequencies(IMAGE_SIZE)[pairs[:, 1]]
  y, x = np.meshgrid(np.arange(IMAGE_SIZE), np.arange(IMAGE_SIZE), indexing="ij")
  argument = 2 * np.pi * (fy[:, None, None] * y + fx[:, None, None] * x) / IMAGE_SIZE
  phases = rng.uniform(0, 2 * np.pi, (count, len(pairs)))
  return (np.einsum("nk,khw->nhw", amplitudes * np.cos(phases), np.cos(argument))
          - np.einsum("nk,khw->nhw", amplitudes * np.sin(phases), np.sin(argument)))


def generate_images(name, split):
  """Generates one split of a planted data set, deterministically.

  Args:
    name: `planted_low`, `planted_mid` or `planted_high`.
    split: `train` or `test`.

  Returns:
    (images, labels): uint8 [N, H, W, 3] and int64 [N], class by class.
  """
  if split not in SPLIT_SIZES:
    raise ValueError(f"split={split!r} must be one of {', '.join(SPLIT_SIZES)}")
  band = _band_name(name)
  rng = np.random.default_rng([SEED, list(BANDS).index(band), _SPLIT_SEEDS[split]])
  per_class = SPLIT_SIZES[split] // NUM_CLASSES
  # Nuisances of each slot, shared by the slot's image in every class.
  colours = (rng.uniform(*GREY_RANGE, (per_class, 1))
             + rng.uniform(-TINT, TINT, (per_class, 3)))[:, None, None, :]
  gains = rng.uniform(*GAIN_RANGE, (per_class, 1, 1, 1))
  pairs_per_class = class_frequencies(name)
  variance = _pattern_variance(pairs_per_class)
  images = []
  for pairs in pairs_per_class:
    patterns = _patterns(rng, pairs, variance, per_class)[..., None]
    fields = _backgrounds(rng, per_class) + patterns
    fields /= fields.std(axis=(1, 2, 3), keepdims=True)
    pixels = colours + gains * CONTRAST * fields
    images.append(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
  labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), per_class)
  return np.concatenate(images), labels


def _metadata(name):
  """JSON-ready description of the planted bands, for the TFDS metadata."""
  return tfds.core.MetadataDict(
      band_radii=list(BANDS[_band_name(name)]),
      class_frequencies=[pairs.tolist() for pairs in class_frequencies(name)],
      layout="centred (row, column), one member per conjugate pair; see planted_bands")


class _Planted(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS builder of one planted data set (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  SPLIT_NAMES = tuple(SPLIT_SIZES)
  RELEASE_NOTES = {"1.0.0": "Pink-noise backgrounds with per-class planted frequencies."}

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=("image", "label"),
        metadata=_metadata(self.name),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in SPLIT_SIZES}

  def _generate_examples(self, split):
    images, labels = generate_images(self.name, split)
    # TFDS orders the written examples by a hash of the key, which mixes the classes.
    for position, (image, label) in enumerate(zip(images, labels)):
      yield f"{label}-{position}", {"image": image, "label": label}


class PlantedLow(_Planted):
  """`planted_low`: planted frequencies with radius in [1, 5)."""


class PlantedMid(_Planted):
  """`planted_mid`: planted frequencies with radius in [5, 10)."""


class PlantedHigh(_Planted):
  """`planted_high`: planted frequencies with radius in [10, 15)."""
