"""Flags of the pipeline itself (where and how to run), and helpers for every module's
flags: validators that report in one line, and settings read as a plain namespace.

Experiments and analyses define their own flags in their own modules (absl's global
registry parses them all, so any flagfile works), and each declares which flags it
reads: only those are recorded with its outputs and decide whether they are stale.
"""
import types

from absl import flags

from tfrandlabels.data.sources import parse_split
from tfrandlabels.training.strategy import STRATEGIES

FLAGS = flags.FLAGS

flags.DEFINE_string("experiment", "transfer", "Experiment to run (see README).")
flags.DEFINE_string("workdir", "workdir/quick", "Output folder (local, gs:// or ram://).")
flags.DEFINE_list("stages", [], "Stages of the experiment to run, in its order (default: "
                  "all). Unknown names are refused with the experiment's list.")
flags.DEFINE_list("analyses", [], "Analyses to run on the experiment's models (default: "
                  "the experiment's own list; 'none' for no analysis).")
flags.DEFINE_bool("force", False, "Redo the selected stages, discarding their outputs, even "
                  "if they hold a run with other settings.")
flags.DEFINE_enum("strategy", "auto", STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU name, grpc://host:port, or 'local' (TPU VM).")
flags.DEFINE_bool("deterministic", False, "Deterministic ops and seeds (slower).")

# Where and how to run (and where the data lives): never part of what a stage's
# output depends on.
RUN_FLAGS = ("experiment", "workdir", "stages", "analyses", "force", "strategy", "tpu",
             "deterministic", "data_dir")


def _parses(parse):
  """A check that accepts the values `parse` accepts (it raises ValueError otherwise)."""
  def check(value):
    try:
      parse(value)
    except ValueError:
      return False
    return True
  return check


def ints(values):
  """A list of strings as ints, or None if one is not an integer."""
  try:
    return [int(v) for v in values]
  except (TypeError, ValueError):
    return None


def check(name, predicate, allowed):
  """Registers a validator: a bad value fails with '--NAME=VALUE ALLOWED' in one line."""
  def validate(value):
    if predicate(value):
      return True
    shown = ",".join(map(str, value)) if isinstance(value, list) else value
    raise flags.ValidationError(f"--{name}={shown} {allowed}")
  flags.register_validator(name, validate)


def check_at_least(names, minimum):
  for name in names:
    check(name, lambda v, m=minimum: v is not None and v >= m, f"must be >= {minimum}")


def check_parses(name, parse, allowed, optional=False):
  """Validates with a parser; `optional` also accepts an empty value."""
  ok = _parses(parse)
  check(name, lambda v: (optional and not v) or ok(v), allowed)


def check_split(name):
  check_parses(name, parse_split,
               "must be a split such as train, train[:20000], train[25000:], test[:10%]")


def check_int_list(name, minimum, distinct=False):
  def valid(values):
    numbers = ints(values)
    return (bool(numbers) and min(numbers) >= minimum and
            (not distinct or len(set(numbers)) == len(numbers)))
  detail = "distinct " if distinct else ""
  check(name, valid, f"must be a non-empty comma list of {detail}integers >= {minimum}, "
        f"e.g. {minimum},{minimum + 1}")


def settings(names, lists_of_ints=()):
  """The current values of flags `names` as a namespace; `lists_of_ints` converted."""
  values = {name: FLAGS[name].value for name in names}
  for name in lists_of_ints:
    values[name] = ints(values[name])
  return types.SimpleNamespace(**values)


check("workdir", bool, "must be a folder path")
check("stages", all, "must be a comma list of stage names without empty entries")
check("analyses", all, "must be a comma list of analysis names without empty entries")
