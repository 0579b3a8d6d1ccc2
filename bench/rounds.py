"""Alternating rounds: how every benchmark in bench/ measures its contenders.

On a shared machine the load drifts while a benchmark runs. Running every contender
once per round, in the reverse order every other round, spreads that drift over all of
them, so the ratios of their medians stay meaningful while absolute figures wander;
the spread (min, max) shows how far they wandered.

The scripts run as `.venv/bin/python bench/NAME.py`, which puts bench/ first on
sys.path, so they `import rounds`.
"""
import statistics
import time


def alternate(contenders, rounds, warmup=False):
  """Runs every contender once per round, reversing the order every other round.

  Args:
    contenders: ordered {name: fn() -> a measured value, e.g. seconds or images/s}.
    rounds: how many rounds.
    warmup: first call every contender once, unrecorded (tracing, filling caches).

  Returns:
    {name: [the value of each round]}.
  """
  if warmup:
    for run in contenders.values():
      run()
  values = {name: [] for name in contenders}
  for round_ in range(rounds):
    order = list(contenders) if round_ % 2 == 0 else list(contenders)[::-1]
    for name in order:
      values[name].append(contenders[name]())
  return values


def timed(fn):
  """A contender for `alternate`: () -> seconds one call of fn() takes."""
  def run():
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
  return run


def describe(values):
  """(median, min, max) of one contender's values: the figure and its spread."""
  return statistics.median(values), min(values), max(values)


def medians(values):
  """{name: median} of `alternate`'s result: what ratios are taken of."""
  return {name: describe(v)[0] for name, v in values.items()}


def report(values, unit="s", digits=2, suffix=None):
  """Prints `name: median X unit (min A, max B) over N rounds` for every contender.

  Args:
    values: {name: [values]}, as `alternate` returns them.
    unit: what the values are in.
    digits: decimals shown.
    suffix: optional fn(name) -> text appended to the contender's line.
  """
  for name, series in values.items():
    median, low, high = describe(series)
    print(f"{name}: median {median:,.{digits}f} {unit} (min {low:,.{digits}f}, max "
          f"{high:,.{digits}f}) over {len(series)} rounds" + (suffix(name) if suffix else ""))
