"""File helpers over tf.io.gfile, so local, gs:// and ram:// paths all work."""
import contextlib
import json
import os
import uuid

import tensorflow as tf

from tfrandlabels.errors import ConfigError


class DamagedFile(ConfigError):
  """A file this package wrote does not parse: cut by a full disk, a copy or a hand
  edit (the package's own writes are atomic and never leave one behind)."""

  def __init__(self, path, reason):
    super().__init__(f"{path} is damaged ({reason})")
    self.path = path
    self.reason = reason


def atomic_write(path, text, overwrite=True):
  """Writes `text` to `path` atomically: a temporary file in the same folder, renamed.

  Readers see the old file or the new one, never a half-written file, even if the
  process is killed while writing. `overwrite=False`: raises tf.errors.AlreadyExistsError
  (and removes the temporary file) if `path` exists; TensorFlow checks and then renames,
  so two writers at the same moment can both succeed (see pipeline/lock.py).
  """
  folder = os.path.dirname(path)
  if folder:
    tf.io.gfile.makedirs(folder)
  # Not `path` + suffix: ram:// takes any name that `path` is a prefix of for a folder
  # of that name, so `path` would seem to exist while its temporary file does.
  temporary = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
  mode = "wb" if isinstance(text, bytes) else "w"
  try:
    with tf.io.gfile.GFile(temporary, mode) as f:
      f.write(text)
    tf.io.gfile.rename(temporary, path, overwrite=overwrite)
  except BaseException:
    # A full disk, a refused rename, SIGTERM: leave no partial temporary file behind.
    with contextlib.suppress(tf.errors.OpError, OSError):
      tf.io.gfile.remove(temporary)
    raise


def write_json(path, value, unless_same=False, overwrite=True):
  """Writes `value` as JSON atomically; `unless_same`: not if `path` already holds it,
  so a rerun that changes nothing leaves the file (and its time) as it was;
  `overwrite`: as in `atomic_write`."""
  text = json.dumps(value, indent=2, sort_keys=True) + "\n"
  if unless_same and tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      if f.read() == text:
        return
  atomic_write(path, text, overwrite)


def read_json(path, default=None):
  """Reads a JSON file; `default` if it does not exist; DamagedFile if it does not parse."""
  if not tf.io.gfile.exists(path):
    return default
  with tf.io.gfile.GFile(path, "rb") as f:
    data = f.read()
  try:
    return json.loads(data)
  except ValueError as e:  # UnicodeDecodeError is one too.
    raise DamagedFile(path, f"not valid JSON: {e}") from None


def read_jsonl(path):
  """Reads a JSON-lines file; a missing file is an empty list; DamagedFile names the
  first line that does not parse."""
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path, "rb") as f:
    lines = f.read().splitlines()
  records = []
  for number, line in enumerate(lines, 1):
    if line.strip():
      try:
        records.append(json.loads(line))
      except ValueError:  # UnicodeDecodeError is one too.
        raise DamagedFile(path, f"line {number} is not valid JSON") from None
  return records


def write_jsonl(path, records):
  atomic_write(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
