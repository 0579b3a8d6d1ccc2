"""Data sources: one front door, `load(name, split)`, for TFDS, `embedded` and folders.

Every source yields dict elements {"image": uint8[H, W, C], "label": int64,
"index": int64}. `index` is the example's position within its split in TFDS's
deterministic file order, counted from the start of the split even for a slice, so
`train[25000:]` starts at index 25000 and ids never collide between disjoint slices of
one split. Label corruption keys on it, which makes corrupted labels independent of
shuffling, sharding and worker count.
"""
import os
import re

import requests
import tensorflow as tf
import tensorflow_datasets as tfds

# Registers the generated TFDS builders: `embedded`, `planted_low`/`_mid`/`_high`.
from tfrandlabels import errors
from tfrandlabels.data import embedded
from tfrandlabels.data import planted

FOLDER_PREFIX = "folder:"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
# A split is a split name, optionally sliced: `train`, `train[:20000]`, `test[10%:]`,
# or several joined with `+`.
_SPLIT_PART = re.compile(r"^[A-Za-z_][\w-]*(\[-?\d*%?:-?\d*%?\])?$")

del embedded, planted


def parse_split(split):
  """Returns the split names in `split`, or raises ValueError on bad syntax."""
  parts = split.split("+") if isinstance(split, str) else [None]
  if not all(part and _SPLIT_PART.match(part.strip()) for part in parts):
    raise ValueError(
        f"split={split!r} is not a valid split; use a name with an optional slice, "
        "e.g. 'train', 'train[:20000]', 'train[25000:]', 'test[:10%]', or 'train+test'")
  return [part.strip().split("[")[0] for part in parts]


def _check_split_names(names, available, split, dataset):
  unknown = [n for n in names if n not in available]
  if unknown:
    raise ValueError(f"split={split!r}: {dataset} has no split {unknown[0]!r}; "
                     f"available splits: {sorted(available)}")


def _builder(name, data_dir):
  if name.startswith(FOLDER_PREFIX):
    return _folder_builder(name[len(FOLDER_PREFIX):])
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(
        f"name={name!r} is not a known data set; use a TFDS image classification name "
        "(cifar10, cifar100, svhn_cropped, mnist, imagenet2012, ...), 'embedded', "
        "'planted_low', 'planted_mid', 'planted_high', or 'folder:PATH'") from None


def _folder_builder(root):
  """An ImageFolder builder for root/SPLIT/CLASS/IMAGE, after checking the images."""
  if not tf.io.gfile.isdir(root):
    raise ValueError(f"name='folder:{root}': no such directory; expected "
                     "PATH/SPLIT/CLASS/IMAGE files (e.g. PATH/train/cat/001.png)")
  files = [os.path.join(dirpath, f)
           for dirpath, _, filenames in tf.io.gfile.walk(root)
           for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS)]
  if not files:
    raise ValueError(f"name='folder:{root}': no image files ({', '.join(IMAGE_EXTENSIONS)}) "
                     "found; expected PATH/SPLIT/CLASS/IMAGE files")
  for path in files:
    try:
      tf.io.decode_image(tf.io.gfile.GFile(path, "rb").read(), expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
      raise ValueError(f"name='folder:{root}': {path} is not a readable image; "
                       "remove or replace it") from None
  return tfds.ImageFolder(root)


def _check_manual_download(builder, name):
  """Fails early, with instructions, when a manual-download data set is missing."""
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS is None:
    return
  manual_dir = os.path.join(builder.data_dir_root, "downloads", "manual")
  if not tf.io.gfile.exists(manual_dir) or not tf.io.gfile.listdir(manual_dir):
    instructions = " ".join(str(builder.MANUAL_DOWNLOAD_INSTRUCTIONS).split())
    raise ValueError(f"name={name!r} needs a manual download: put the files in "
                     f"{manual_dir} (pass data_dir= to choose another root). {instructions}")


# What a download that cannot reach its server (no network, a firewall, an HTTP error)
# raises; anything else is a bug or a local fault and keeps its traceback.
_FETCH_ERRORS = (requests.exceptions.RequestException, tfds.download.DownloadError)


def _prepare(builder, name):
  """builder.download_and_prepare(), with a failed download reported in one line."""
  if name.startswith(FOLDER_PREFIX):
    return
  try:
    builder.download_and_prepare()
  except _FETCH_ERRORS as e:
    raise ValueError(
        f"name={name!r} could not be downloaded ({errors.first_line(e)}); prepare it on a "
        f"machine with a network (tfds.builder({builder.name!r}, data_dir=DIR)"
        ".download_and_prepare()), copy DIR here and pass --data_dir=DIR, or use "
        "--dataset=embedded") from None


def _split_sizes(builder):
  return {name: info.num_examples for name, info in builder.info.splits.items()}


def _with_index(builder, instruction, offset):
  """Reads one absolute slice of one split and adds the `index` field."""
  start = instruction.from_ or 0
  if isinstance(builder, tfds.ImageFolder):  # It reads whole splits only.
    ds = builder.as_dataset(split=instruction.splitname, shuffle_files=False)
    ds = ds.skip(start).take(-1 if instruction.to is None else instruction.to - start)
  else:
    ds = builder.as_dataset(split=tfds.core.ReadInstruction(
        instruction.splitname, from_=instruction.from_, to=instruction.to, unit="abs"),
        shuffle_files=False)
  start += offset
  indices = tf.data.Dataset.range(start, tf.int64.max)

  def to_element(example, index):
    image = example["image"]
    return {"image": tf.cast(image, tf.uint8), "label": tf.cast(example["label"], tf.int64),
            "index": index}

  return tf.data.Dataset.zip((ds, indices)).map(to_element,
                                                num_parallel_calls=tf.data.AUTOTUNE)


def _prepared_builder(name, split, data_dir):
  """Validates name and split, prepares the data set once, and returns its builder."""
  if not isinstance(name, str) or not name:
    raise ValueError(f"name={name!r} must be a non-empty string")
  names = parse_split(split)
  builder = _builder(name, data_dir)
  # Known before preparing (a prepared set, or a builder that declares its splits), so
  # a bad split name is refused before anything is written to data_dir.
  known = builder.info.splits or getattr(builder, "SPLIT_NAMES", None)
  if known:
    _check_split_names(names, known, split, name)
  if not name.startswith(FOLDER_PREFIX):
    if not tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json")):
      _check_manual_download(builder, name)
    _prepare(builder, name)
    _check_split_names(names, builder.info.splits, split, name)
  return builder


def example_ranges(name, split, data_dir=None):
  """The examples a split string selects, as (split name, start, stop) triples.

  Lets a caller check that two splits (upstream and downstream) are disjoint.
  """
  builder = _prepared_builder(name, split, data_dir)
  return [(i.splitname, i.from_ or 0, i.to if i.to is not None else
           builder.info.splits[i.splitname].num_examples)
          for i in tfds.core.ReadInstruction.from_spec(split).to_absolute(builder.info.splits)]


def load(name, split, data_dir=None):
  """Loads a labelled image data set as dict elements with a stable `index`.

  Args:
    name: a TFDS name (`cifar10`, `imagenet2012`, ...), `embedded`, or `folder:PATH`
      with images under PATH/SPLIT/CLASS/.
    split: a TFDS split string, e.g. `train`, `train[:20000]`, `train[25000:]`.
    data_dir: where TFDS keeps prepared data (default: TFDS's, ~/tensorflow_datasets).

  Returns:
    A tf.data.Dataset of {"image": uint8[H, W, C], "label": int64, "index": int64}
    in a deterministic order.

  Raises:
    ValueError: unknown data set, bad split, missing manual download, bad folder.
  """
  builder = _prepared_builder(name, split, data_dir)
  sizes = _split_sizes(builder)
  instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(builder.info.splits)
  # Several split names (`train+test`): later ones are offset past earlier ones.
  order = list(dict.fromkeys(i.splitname for i in instructions))
  offsets = {n: sum(sizes[m] for m in order[:order.index(n)]) for n in order}
  parts = [_with_index(builder, i, offsets[i.splitname]) for i in instructions]
  ds = parts[0]
  for part in parts[1:]:
    ds = ds.concatenate(part)
  return ds


def num_classes(name, data_dir=None):
  """Returns the number of classes of a data set's `label` feature."""
  builder = _builder(name, data_dir)
  _prepare(builder, name)
  return builder.info.features["label"].num_classes
