"""Workdir layout, completion markers and the saved flags of a pipeline run.

A stage's output folder is finished when its DONE marker exists; the marker is written
atomically, last, so an interrupted stage has none and is resumed on the next run.
"""
import io as python_io
import os

import numpy as np
import tensorflow as tf

from tfrandlabels import io

MARKER = "DONE"
FLAGS_FILE = "flags.json"
# Flags that say where or how to run, not what the experiment is: changing them
# between runs of one workdir is allowed.
RUN_FLAGS = frozenset({"workdir", "stages", "force", "strategy", "tpu", "data_dir"})


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


def changed_flags(workdir, flags):
  """Names of experiment flags whose value differs from the run saved in workdir."""
  saved = io.read_json(os.path.join(workdir, FLAGS_FILE))
  if saved is None:
    return []
  names = (set(saved) | set(flags)) - RUN_FLAGS
  return sorted(n for n in names if saved.get(n) != flags.get(n))


def save_flags(workdir, flags):
  io.write_json(os.path.join(workdir, FLAGS_FILE), flags)


def save_array(path, array):
  buffer = python_io.BytesIO()
  np.save(buffer, np.asarray(array))
  io.atomic_write(path, buffer.getvalue())


def load_array(path):
  with tf.io.gfile.GFile(path, "rb") as f:
    return np.load(python_io.BytesIO(f.read()))
