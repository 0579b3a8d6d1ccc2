"""Stopping for preemption: SIGTERM (what a preempted VM and most schedulers send) asks
a run to stop at its next log step, after saving a checkpoint there.

Entry points wrap their work in `watch()`, which installs the SIGTERM handler for its
duration (a library caller keeps its own signal handling): outside training the signal
raises Preempted at once (finished stages and runs are on disk; an unfinished analysis
is redone), while the trainer defers it (`deferred()`) and asks `agreed_stop` at every
log step. Stopping at a log step keeps the run exact: the resumed run
starts from a checkpoint at a log step, so its history and weights are those of an
uninterrupted run. Workers of a multi-worker (or multi-host TPU) run agree on the step
through one all-reduce of a flag, so they all save the same step and stop together,
whichever of them received the signal; this plays the part of TensorFlow's
`PreemptionCheckpointHandler` in a loop that already has synchronous stop points.
"""
import contextlib
import signal
import threading

import tensorflow as tf


class Preempted(Exception):
  """A run stopped on SIGTERM after saving its checkpoint; the same command resumes it."""


_requested = threading.Event()
_deferring = threading.Event()
_watching = threading.Event()
_STOPPED = ("stopped on SIGTERM; finished stages and runs are kept: run the same command "
            "to resume")


def _handle(signum, frame):
  del signum, frame
  _requested.set()
  if not _deferring.is_set():
    raise Preempted(_STOPPED)


@contextlib.contextmanager
def watch():
  """Turns SIGTERM into Preempted for the duration of the block: raised at once, or,
  inside `deferred()`, when the trainer reaches its next log step."""
  previous = signal.signal(signal.SIGTERM, _handle)
  _requested.clear()
  _watching.set()
  try:
    yield
  finally:
    _watching.clear()
    signal.signal(signal.SIGTERM, previous)
    _requested.clear()


def reclaim():
  """Takes SIGTERM back inside `watch()`, after making a strategy.

  A multi-worker strategy starts TensorFlow's coordination service, whose preemption
  notifier installs its own C-level SIGTERM handler, silently replacing Python's (it
  only logs "SIGTERM caught"); without this, a preempted worker would train on.
  """
  if _watching.is_set():
    signal.signal(signal.SIGTERM, _handle)


@contextlib.contextmanager
def deferred():
  """Within the block SIGTERM only records the request; the caller stops at its next
  safe point (see `agreed_stop`). A request already recorded raises on leaving."""
  _deferring.set()
  try:
    yield
  finally:
    _deferring.clear()
  if requested():
    raise Preempted(_STOPPED)


def requested():
  """Whether this process received SIGTERM inside `watch()`."""
  return _requested.is_set()


def _multi_worker(strategy):
  return strategy.extended._in_multi_worker_mode()  # pylint: disable=protected-access


def agreed_stop(strategy):
  """Whether any worker of the run was asked to stop (the same answer on every worker).

  Every worker must call it at the same steps: on a multi-worker strategy it is a
  collective.
  """
  if not _multi_worker(strategy):
    return requested()
  flag = 1.0 if requested() else 0.0
  flags = strategy.experimental_distribute_values_from_function(
      lambda context: tf.constant(flag))
  return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None) > 0)
