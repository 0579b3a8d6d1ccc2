"""File helpers over tf.io.gfile, so local, gs:// and ram:// paths all work."""
import json
import os
import uuid

import tensorflow as tf


def atomic_write(path, text):
  """Writes `text` to `path` atomically: a temporary file in the same folder, renamed.

  Readers see the old file or the new one, never a half-written file, even if the
  process is killed while writing.
  """
  folder = os.path.dirname(path)
  if folder:
    tf.io.gfile.makedirs(folder)
  temporary = f"{path}.tmp-{uuid.uuid4().hex}"
  mode = "wb" if isinstance(text, bytes) else "w"
  with tf.io.gfile.GFile(temporary, mode) as f:
    f.write(text)
  tf.io.gfile.rename(temporary, path, overwrite=True)


def write_json(path, value, unless_same=False):
  """Writes `value` as JSON atomically; `unless_same`: not if `path` already holds it,
  so a rerun that changes nothing leaves the file (and its time) as it was."""
  text = json.dumps(value, indent=2, sort_keys=True) + "\n"
  if unless_same and tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      if f.read() == text:
        return
  atomic_write(path, text)


def read_json(path, default=None):
  if not tf.io.gfile.exists(path):
    return default
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def read_jsonl(path):
  """Reads a JSON-lines file; a missing file is an empty list."""
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, records):
  atomic_write(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
