"""A run's checkpoints on disk: which exist, and whether each one is whole.

The trainer saves `ckpt-<step>.index` and its data shards in a run's checkpoints/
folder. TensorFlow writes them atomically, so damage comes from outside: a copy that
stopped, a full disk, a lost file. `problem` tells a damaged checkpoint from a whole one
without restoring it (the index reads, every shard exists, the shards are at least as
long as the tensors they hold); `newest_first` lists them by step, and `checked` pairs
each with its problem, lazily, so a caller stops at the first whole one. The `checkpoint`
state file is not consulted: it can itself be damaged, and TensorFlow then silently
reports no checkpoint at all.
"""
import os
import re

import numpy as np
import tensorflow as tf

from tfrandlabels import errors

FOLDER = "checkpoints"
_INDEX = re.compile(r"^ckpt-(\d+)\.index$")
_SHARDS = re.compile(r"\.data-\d+-of-(\d+)$")


def step_of(prefix):
  return int(prefix.rsplit("-", 1)[1])


def newest_first(directory):
  """The checkpoint prefixes in `directory` (ckpt-<step>), highest step first."""
  if not tf.io.gfile.isdir(directory):
    return []
  steps = [int(m.group(1)) for m in map(_INDEX.match, tf.io.gfile.listdir(directory)) if m]
  return [os.path.join(directory, f"ckpt-{s}") for s in sorted(steps, reverse=True)]


def _tensor_bytes(reader):
  """A lower bound of the bytes the data shards hold: every tensor's payload."""
  dtypes = reader.get_variable_to_dtype_map()
  total = 0
  for name, shape in reader.get_variable_to_shape_map().items():
    if dtypes[name] == tf.string:
      total += sum(len(v) for v in np.asarray(reader.get_tensor(name), dtype=object).flat)
    else:
      total += int(np.prod(shape)) * dtypes[name].size
  return total


def problem(prefix):
  """Why the checkpoint at `prefix` cannot be restored, or None if it looks whole.

  Reads the index and the (small) string tensors, not the weights; a damage this
  misses (a flipped byte) still fails the restore, whose checksums catch it.
  """
  try:
    # Not tf.train.load_checkpoint: it takes `prefix` for a folder where the file system
    # says it is one, as ram:// does for any prefix of a file's name (ckpt-2.index).
    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
  except tf.errors.OpError as e:
    return f"index unreadable: {errors.first_line(e, limit=120)}"
  shards = tf.io.gfile.glob(prefix + ".data-*-of-*")
  counts = {int(_SHARDS.search(s).group(1)) for s in shards}
  if not shards or counts != {len(shards)}:
    return f"data shards missing ({len(shards)} found)"
  try:
    expected = _tensor_bytes(reader)
  except (tf.errors.OpError, IndexError) as e:
    return f"data unreadable: {errors.first_line(e, limit=120)}"
  size = sum(tf.io.gfile.stat(s).length for s in shards)
  if size < expected:
    return f"data truncated ({size} bytes, its tensors need at least {expected})"
  return None


def checked(directory):
  """(prefix, problem(prefix)) for the checkpoints in `directory`, highest step first;
  lazy, so only those up to the first whole one are read by a caller that stops there."""
  return ((prefix, problem(prefix)) for prefix in newest_first(directory))
