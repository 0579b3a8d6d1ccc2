"""Completion markers, arrays and content-keyed caches in a run's workdir.

A stage's output folder is finished when its DONE marker exists; the marker is written
atomically, last, so an interrupted stage has none and is resumed on the next run.
"""
import hashlib
import io as python_io
import json
import os

import numpy as np
import tensorflow as tf

from tfrandlabels import io

MARKER = "DONE"


def is_done(folder):
  return tf.io.gfile.exists(os.path.join(folder, MARKER))


def mark_done(folder, summary):
  io.write_json(os.path.join(folder, MARKER), summary)


def done_summary(folder):
  return io.read_json(os.path.join(folder, MARKER))


def remove(path):
  """Deletes a file or a folder tree, if it exists."""
  if tf.io.gfile.isdir(path):
    tf.io.gfile.rmtree(path)
  elif tf.io.gfile.exists(path):
    tf.io.gfile.remove(path)


def save_array(path, array):
  buffer = python_io.BytesIO()
  np.save(buffer, np.asarray(array))
  io.atomic_write(path, buffer.getvalue())


def load_array(path):
  with tf.io.gfile.GFile(path, "rb") as f:
    return np.load(python_io.BytesIO(f.read()))


def fingerprint(value):
  """A short stable hash of a JSON-able value: the key of what an output depends on."""
  text = json.dumps(value, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(folder, kind, key, compute, *, write=True, array=False):
  """The value of `compute()` for `key`, computed once and kept in folder/KIND-HASH.

  The file name holds the fingerprint of `key` (every setting the value depends
  on), so a changed setting computes a new value instead of reusing a stale one.
  Arrays go to .npy, other values to .json; `write=False` (non-chief workers)
  computes without saving.
  """
  path = os.path.join(folder, f"{kind}-{fingerprint(key)}.{'npy' if array else 'json'}")
  if tf.io.gfile.exists(path):
    return load_array(path) if array else io.read_json(path)
  value = compute()
  if write:
    if array:
      save_array(path, value)
    else:
      io.write_json(path, value)
  return value
