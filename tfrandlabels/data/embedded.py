"""`embedded`: a real natural-image classification data set that needs no network.

Each class is one photograph shipped inside scikit-image (pinned in setup.py, so the
data set is byte-identical everywhere). An example is a square crop of its class's
photograph, of random side and position, resized to 32x32x3. The task is to tell which
scene, texture or object a small patch comes from: a real visual task with natural
image statistics (colour, texture and 1/f spectra), at CIFAR-10's resolution.

Train crops come from the left three quarters of each photograph and test crops from
the right quarter, so no test pixel was ever seen in training; crops that are nearly
flat (for example the black border of `retina`) are rejected, and pixel-identical
duplicates are removed, so the two splits share no identical image.
"""
import hashlib

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SIZE = 32
TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 150
TRAIN_FRACTION = 0.75  # Share of each photograph's width that train crops come from.
MIN_CROP, MAX_CROP = 32, 96
MIN_STD = 6.0  # Crops flatter than this (in uint8 units) carry no class evidence.
SEED = 20201206

# Class name -> scikit-image loader name. Colour photographs plus two grey textures.
PHOTOGRAPHS = (
    ("astronaut", "astronaut"),
    ("cat", "chelsea"),
    ("coffee", "coffee"),
    ("rocket", "rocket"),
    ("galaxies", "hubble_deep_field"),
    ("tissue", "immunohistochemistry"),
    ("retina", "retina"),
    ("motorcycle", "stereo_motorcycle"),
    ("brick", "brick"),
    ("grass", "grass"),
)


def _photograph(loader_name):
  """Returns a scikit-image sample photograph as uint8 [H, W, 3]."""
  import skimage.data  # Imported lazily: only preparing the data set needs it.
  image = getattr(skimage.data, loader_name)()
  if isinstance(image, tuple):  # stereo_motorcycle returns (left, right, disparity).
    image = image[0]
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.stack([image] * 3, axis=-1)
  return image[..., :3].astype(np.uint8)


def _resize(crop):
  """Area-averages a uint8 crop to IMAGE_SIZE x IMAGE_SIZE (deterministic)."""
  from skimage.transform import resize
  out = resize(crop, (IMAGE_SIZE, IMAGE_SIZE), order=1, anti_aliasing=True,
               preserve_range=True)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def crops(image, count, x_range, rng, seen):
  """Draws `count` distinct, non-flat crops whose columns lie in `x_range`.

  Args:
    image: uint8 [H, W, 3] photograph.
    count: number of crops to return.
    x_range: (x_min, x_max) column range the crops must stay inside.
    rng: numpy Generator.
    seen: set of image digests already used (across splits); updated in place.

  Returns:
    uint8 array [count, IMAGE_SIZE, IMAGE_SIZE, 3].
  """
  height = image.shape[0]
  x_min, x_max = x_range
  largest = min(MAX_CROP, height, x_max - x_min)
  out = []
  while len(out) < count:
    side = int(rng.integers(MIN_CROP, largest + 1))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(x_min, x_max - side + 1))
    crop = _resize(image[top:top + side, left:left + side])
    digest = hashlib.sha1(crop.tobytes()).hexdigest()
    if crop.std() < MIN_STD or digest in seen:
      continue
    seen.add(digest)
    out.append(crop)
  return np.stack(out)


def generate(split):
  """Yields (key, example) pairs of one split, deterministically."""
  rng = np.random.default_rng(SEED)
  seen = set()
  per_split = {"train": [], "test": []}
  for label, (_, loader_name) in enumerate(PHOTOGRAPHS):
    image = _photograph(loader_name)
    boundary = int(image.shape[1] * TRAIN_FRACTION)
    per_split["train"].append((label, crops(image, TRAIN_PER_CLASS, (0, boundary), rng, seen)))
    per_split["test"].append(
        (label, crops(image, TEST_PER_CLASS, (boundary, image.shape[1]), rng, seen)))
  # TFDS orders the written examples by a hash of the key, which mixes the classes,
  # so that a prefix slice such as `train[:1000]` holds every class.
  for label, images in per_split[split]:
    for position, image in enumerate(images):
      yield f"{label}-{position}", {"image": image, "label": label}


class Embedded(tfds.core.GeneratorBasedBuilder):
  """TFDS builder of the `embedded` data set (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  SPLIT_NAMES = ("train", "test")
  RELEASE_NOTES = {"1.0.0": "10 classes of crops of scikit-image 0.26.0 photographs."}

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
            "label": tfds.features.ClassLabel(names=[name for name, _ in PHOTOGRAPHS]),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {"train": self._generate_examples("train"),
            "test": self._generate_examples("test")}

  def _generate_examples(self, split):
    return generate(split)
