"""Completion markers, damage checks, arrays and content-keyed caches in a workdir.

A training run's folder is finished when its DONE marker exists and nothing in it is
damaged; the marker is written atomically, last, so an interrupted run has none and is
resumed on the next run. Every write here is atomic, so damage comes from outside (a
copy that stopped, a full disk, a hand edit); `damage` finds it before it is trusted.
"""
import dataclasses
import hashlib
import io as python_io
import json
import os
from typing import List, Optional

import numpy as np
import tensorflow as tf

from tfrandlabels import io
from tfrandlabels.training import checkpoints
from tfrandlabels.training import divergence
from tfrandlabels.training.trainer import HISTORY

MARKER = "DONE"


@dataclasses.dataclass(frozen=True)
class Damage:
  """A damaged or missing file: `delete` is None when doing its stage again recovers
  it (the run resumes from its newest whole checkpoint, a JSON output is rewritten),
  else the folder the user must delete to train that run again."""
  path: str
  reason: str
  delete: Optional[str] = None


def _json_damage(path, read, delete=None):
  try:
    read(path)
  except io.DamagedFile as e:
    return [Damage(path, e.reason, delete)]
  return []


def _run_damage(folder, files):
  """The damage in a training run's folder: its history, DONE marker and checkpoints."""
  found = []
  history = os.path.join(folder, HISTORY)
  records = None
  if HISTORY in files:
    try:
      records = io.read_jsonl(history)
    except io.DamagedFile as e:
      found.append(Damage(history, e.reason, delete=folder))
  done = None
  if MARKER in files:
    marker = os.path.join(folder, MARKER)
    try:
      done = io.read_json(marker)
    except io.DamagedFile as e:
      found.append(Damage(marker, e.reason))
    if HISTORY not in files:
      found.append(Damage(history, "missing from a finished run", delete=folder))
    elif (records is not None and isinstance(done, dict)
          and (not records or records[-1].get("step") != done.get("step"))):
      # Cut at a line's end, or emptied: it parses, but the run's last records are gone.
      found.append(Damage(history, f"ends before the run's last step {done.get('step')}",
                          delete=folder))
  whole, damaged = None, []
  for prefix, reason in checkpoints.checked(os.path.join(folder, checkpoints.FOLDER)):
    if reason is None:
      whole = prefix
      break
    damaged.append(Damage(prefix, f"checkpoint: {reason}"))
  found += damaged
  if damaged and whole is None:
    found.append(Damage(folder, "no checkpoint is whole", delete=folder))
  elif not damaged and isinstance(done, dict) and isinstance(done.get("step"), int) and (
      whole is None or checkpoints.step_of(whole) < done["step"]):
    found.append(Damage(os.path.join(folder, checkpoints.FOLDER),
                        f"the checkpoint of step {done['step']}, where the run finished, "
                        "is missing"))
  return found


def damage(path) -> List[Damage]:
  """Damaged or inconsistent files under `path` (a stage output: file or folder).

  A folder with a DONE marker, a history or a checkpoints/ folder is a training run:
  its history must parse (else: delete the run), a finished run must have a history and
  a whole checkpoint at its final step, and damaged checkpoints are reported (the run
  resumes from the newest whole one; none whole: delete the run). Any other .json or
  .jsonl file must parse.
  """
  if not tf.io.gfile.isdir(path):
    reader = {".json": io.read_json, ".jsonl": io.read_jsonl}.get(os.path.splitext(path)[1])
    return _json_damage(path, reader) if reader and tf.io.gfile.exists(path) else []
  found = []
  for folder, subfolders, files in tf.io.gfile.walk(path):
    if os.path.basename(folder.rstrip("/")) == checkpoints.FOLDER:
      continue
    # gs:// lists folders with a trailing slash.
    subfolders = {s.rstrip("/") for s in subfolders}
    run = MARKER in files or HISTORY in files or checkpoints.FOLDER in subfolders
    if run:
      found += _run_damage(folder, files)
    found += [d for f in files if not (run and f in (MARKER, HISTORY))
              for d in damage(os.path.join(folder, f))]
  return found


def divergences(path):
  """{run folder: its divergence events} for the training runs under `path` that had any."""
  if not tf.io.gfile.isdir(path):
    return {}
  return {folder.rstrip("/"): divergence.events(folder)
          for folder, _, files in tf.io.gfile.walk(path) if divergence.FILE in files}


def diverged_runs(path):
  """The training runs under `path` stopped by a divergence not yet trained on from."""
  return [folder for folder in divergences(path) if divergence.pending(folder)]


def is_done(folder):
  """A training run's folder is finished: DONE is there and nothing is damaged."""
  return tf.io.gfile.exists(os.path.join(folder, MARKER)) and not damage(folder)


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
