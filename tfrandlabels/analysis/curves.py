"""Learning curves over seeds and the speed of transfer (Maennel et al., NeurIPS 2020, Fig. 1).

The transfer experiment asks how many steps a finetuned network needs to reach a target
training accuracy, compared with training from scratch. This module turns the trainer's
history records (one list per seed, `history.jsonl`) into that answer:

* `mean_ci95`: mean over seeds with a Student-t 95% confidence interval.
* `learning_curves`: mean and confidence band of accuracy and loss over steps.
* `steps_to_target` and `speedup`: the first logged step at which a run reaches the
  target, and the ratio of the scratch runs' mean to a variant's mean.

Resolution: the trainer writes a record every `log_every` steps, and its `accuracy` is the
mean train accuracy over the steps since the previous record. A run that crosses the
target between two records is reported at the later one, so steps to target are exact
only to within one logging interval; choose `log_every` small compared with the steps
the runs need.

Pure numpy, no I/O; every output is made of plain Python numbers, ready for JSON.
"""
import math
import numbers
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import stats


def mean_ci95(values) -> Tuple[np.ndarray, np.ndarray]:
  """Mean over seeds and the half width of its 95% confidence interval.

  The interval is mean +- t_{0.975, n-1} * s / sqrt(n), with s the sample standard
  deviation (ddof=1): the Student-t interval for the mean of n independent runs.

  Args:
    values: [seeds, points] array; row i holds seed i's value at each point.

  Returns:
    (mean, half_width), two float64 [points] arrays. With a single seed the half width
    is 0: one run gives no estimate of the spread.
  """
  values = np.asarray(values, dtype=np.float64)
  if values.ndim != 2 or values.shape[0] == 0:
    raise ValueError(f"values must be a [seeds, points] array with seeds >= 1, got shape "
                     f"{values.shape}.")
  seeds = values.shape[0]
  mean = values.mean(axis=0)
  if seeds == 1:
    return mean, np.zeros_like(mean)
  scale = stats.t.ppf(0.975, seeds - 1) / math.sqrt(seeds)
  return mean, scale * values.std(axis=0, ddof=1)


def learning_curves(histories: Sequence[Sequence[dict]],
                    keys: Sequence[str] = ("accuracy", "loss")) -> dict:
  """Mean and 95% band over seeds of logged metrics, at the steps every seed logged.

  Args:
    histories: one list of history records per seed, each record a dict with an int
      "step" and a float for every name in `keys` (the trainer's `history.jsonl`).
      Records missing one of `keys` are skipped (e.g. `eval_accuracy` is logged only
      every `eval_every` steps); if a step appears twice, the later record counts.
    keys: the metrics to aggregate.

  Returns:
    {"step": [...], "<key>_mean": [...], "<key>_ci95": [...] for each key}: lists of
    plain floats (steps as ints), in increasing step order; `_ci95` is the half width
    of the interval (see `mean_ci95`).
  """
  if isinstance(keys, str) or not keys:
    raise ValueError(f"keys must be a non-empty sequence of metric names, got {keys!r}.")
  if not histories:
    raise ValueError("histories must hold one list of records per seed, got none.")
  by_step = [{int(r["step"]): r for r in history if all(k in r for k in keys)}
             for history in histories]
  steps = sorted(set.intersection(*(set(records) for records in by_step)))
  if not steps:
    raise ValueError(f"histories share no step at which every seed logged {list(keys)}; "
                     "check that the runs used the same log_every.")
  curves = {"step": steps}
  for key in keys:
    mean, half_width = mean_ci95([[records[s][key] for s in steps] for records in by_step])
    curves[f"{key}_mean"] = mean.tolist()
    curves[f"{key}_ci95"] = half_width.tolist()
  return curves


def steps_to_target(history: Sequence[dict], target: float,
                    key: str = "accuracy") -> Optional[int]:
  """The first logged step at which `key` is at least `target`.

  Args:
    history: one run's history records, dicts with an int "step" (any order).
    target: the threshold, e.g. 0.9 train accuracy.
    key: the metric compared with `target`; records without it are skipped.

  Returns:
    The step, or None if the run never reached the target. Exact only to within the
    logging interval (see the module docstring).
  """
  if isinstance(target, bool) or not isinstance(target, numbers.Real) or not math.isfinite(
      target):
    raise ValueError(f"target must be a finite number, got {target!r}.")
  for record in sorted((r for r in history if key in r), key=lambda r: r["step"]):
    if record[key] >= target:
      return int(record["step"])
  return None


def speedup(scratch_steps: Sequence[Optional[int]],
            variant_steps: Sequence[Optional[int]]) -> Optional[float]:
  """How many times fewer steps a variant needs than training from scratch.

  Args:
    scratch_steps: steps to target of each scratch run (None: never reached).
    variant_steps: steps to target of each run of the variant.

  Returns:
    mean(scratch_steps) / mean(variant_steps): > 1 means the variant reaches the target
    sooner. None if any run never reached the target, since the mean is then unknown.
  """
  for name, steps in (("scratch_steps", scratch_steps), ("variant_steps", variant_steps)):
    if not steps:
      raise ValueError(f"{name} must hold the steps to target of at least one run, got "
                       f"{steps!r}.")
  if any(s is None for s in (*scratch_steps, *variant_steps)):
    return None
  if any(s <= 0 for s in (*scratch_steps, *variant_steps)):
    raise ValueError(f"steps to target must be > 0, got scratch_steps={list(scratch_steps)} "
                     f"and variant_steps={list(variant_steps)}.")
  return float(np.mean(scratch_steps) / np.mean(variant_steps))
