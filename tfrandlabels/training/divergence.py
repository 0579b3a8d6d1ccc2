"""A run's divergences: where its loss stopped being finite, and how training went on.

When a loss or a weight turns NaN or infinite the trainer stops, keeping the last good
checkpoint, and appends an event to the run's `divergence.json`:

  {"step": first step whose loss is not finite, "loss": its value as text,
   "learning_rate": the configured (base) rate, "effective_learning_rate": the rate the
   schedule gave at that step, "checkpoint_step": the step training can go on from}

The same rate would diverge again, so a run with a pending event trains on only at a
lower base rate: it continues from that checkpoint, and the event gains
"continued_learning_rate". The trainer returns the events with the run's final record
(its DONE marker), so a run trained at two rates says so in what it produced.
"""
import os

from tfrandlabels import io
from tfrandlabels.errors import ConfigError

FILE = "divergence.json"


def events(model_dir):
  """The run's divergence events, oldest first ([] if it never diverged)."""
  return io.read_json(os.path.join(model_dir, FILE), default=[])


def pending(model_dir):
  """The run's last divergence if training has not gone on from it, else None."""
  found = events(model_dir)
  return found[-1] if found and "continued_learning_rate" not in found[-1] else None


def record(model_dir, event):
  """Appends a divergence event (atomically: the file is rewritten whole)."""
  io.write_json(os.path.join(model_dir, FILE), events(model_dir) + [event])


def refusal(model_dir, event):
  """Why a run with a pending divergence does not train on at its rate, and what to do."""
  start = (f"its checkpoint at step {event['checkpoint_step']}" if event["checkpoint_step"]
           else "its initialization")
  return (f"{model_dir} diverged at step {event['step']} (loss {event['loss']}) with "
          f"learning rate {event['learning_rate']:g}; rerun with a lower learning rate to "
          f"continue from {start}, or with --force to train the stage again from the start")


def check_continuation(model_dir, learning_rate):
  """The pending divergence that training at `learning_rate` would go on from, or None.

  Raises:
    ConfigError: the run diverged at a base rate no higher than `learning_rate`.
  """
  event = pending(model_dir)
  if event is not None and not learning_rate < event["learning_rate"]:
    raise ConfigError(f"learning_rate={learning_rate:g}: {refusal(model_dir, event)}")
  return event


def mark_continued(model_dir, learning_rate, step):
  """Records that training went on from the pending divergence at `learning_rate`,
  from the checkpoint of `step`."""
  found = events(model_dir)
  found[-1] = {**found[-1], "continued_learning_rate": learning_rate,
               "continued_from_step": step}
  io.write_json(os.path.join(model_dir, FILE), found)
