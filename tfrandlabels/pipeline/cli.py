"""The entry points' shared shell: flag parsing, one-line user errors, exit codes.

A user error (a bad flag value, a missing file, a data set that cannot serve a
split: `ConfigError`, or absl's own flag errors) prints one line, `error: ...`, and
exits with status 2, before anything is written. A diverged run exits with 1, a
multi-worker run that lost a worker (or a remote service) with 3, a run stopped by
SIGTERM (preemption; see `training.preemption`) with 4, a run whose storage failed (a
full disk, a read-only or forbidden path, an unreachable bucket) with 5, each with one
line.
Any other exception is a bug and keeps its traceback.
"""
import re
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from tfrandlabels import errors
from tfrandlabels.errors import ConfigError
from tfrandlabels.training import preemption
from tfrandlabels.training.trainer import TrainingDiverged

USAGE_ERROR = 2
DIVERGED = 1
PEER_LOST = 3
PREEMPTED = 4
STORAGE_FAILED = 5


def fail(message, code=USAGE_ERROR, prefix="error"):
  print(f"{prefix}: {message}", file=sys.stderr)
  sys.exit(code)


def _storage_failed(error):
  fail(f"storage failed: {errors.storage_failure(error)}; every write is atomic, so what "
       "finished is kept: fix the storage and run the same command to resume", STORAGE_FAILED)


def parse_flags(argv):
  """absl's parser, with a bad flag reported in one line instead of the usage text."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    text = str(e).strip().splitlines()[0]
    # A validator's own message already names the flag and its value.
    fail(re.sub(r"^flag --\S+?: (?=--)", "", text))


def with_default_flagfile(argv, flagfile):
  """Reads `flagfile` first unless the command names one, so it supplies the defaults."""
  if any(a.startswith(("--flagfile", "-flagfile")) for a in argv[1:]):
    return argv
  return [argv[0], f"--flagfile={flagfile}"] + argv[1:]


def start(main, argv):
  """Runs main(argv) under absl with one-line user errors."""
  def guarded(args):
    if len(args) > 1:
      fail(f"unexpected arguments {args[1:]}; every setting is a --flag")
    try:
      with preemption.watch():
        main()
    except preemption.Preempted as e:
      fail(e, PREEMPTED, prefix="preempted")
    except ConfigError as e:
      fail(e)
    except TrainingDiverged as e:
      logging.error("%s", e)
      fail(e, DIVERGED)
    except tf.errors.UnavailableError as e:
      if errors.storage_failure(e):
        _storage_failed(e)
      fail(f"lost contact with another worker or a remote service ({errors.first_line(e)}); "
           "when all are back, start the same command on every worker: it resumes from "
           "the last checkpoint", PEER_LOST)
    except (tf.errors.OpError, OSError) as e:
      if errors.storage_failure(e) is None:
        raise
      _storage_failed(e)

  app.run(guarded, argv=argv, flags_parser=parse_flags)
