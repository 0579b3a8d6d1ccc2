"""Learning curves over seeds and the speed of transfer (Maennel et al., NeurIPS 2020, Fig. 1).

The transfer experiment asks how many steps a finetuned network needs to reach a target
training accuracy, compared with training from scratch. This module turns the trainer's
history records (one list per seed, `history.jsonl`) into that answer:

* `mean_ci95`: mean over seeds with a Student-t 95% confidence interval.
* `learning_curves`: each seed's accuracy and loss over steps, their mean and its
  confidence band.
* `steps_to_target` and `speedup`: the first logged step at which a run reaches the
  target, and the ratio of the scratch runs' mean to a variant's mean.
* `worst_loss_ratio`: the largest logged loss over ln(num_classes), which tells whether a
  run spiked (above SPIKE_RATIO), so a speed-up is not read off a recovery.

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
from scipy import special

# A logged loss above this many ln(num_classes) (a uniform prediction's loss) is a spike.
SPIKE_RATIO = 2.0


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
  scale = special.stdtrit(seeds - 1, 0.975) / math.sqrt(seeds)  # Student's t quantile.
  return mean, scale * values.std(axis=0, ddof=1)


def learning_curves(histories: Sequence[Sequence[dict]],
                    keys: Sequence[str] = ("accuracy", "loss")) -> dict:
  """Logged metrics of every seed, their mean and 95% band, at the steps all seeds logged.

  Args:
    histories: one list of history records per seed, each record a dict with an int
      "step" and a float for every name in `keys` (the trainer's `history.jsonl`).
      Records missing one of `keys` are skipped (e.g. `eval_accuracy` is logged only
      every `eval_every` steps); if a step appears twice, the later record counts.
    keys: the metrics to aggregate.

  Returns:
    {"step": [...], "seeds": n, and for each key "<key>_per_seed": [seeds][steps],
    "<key>_mean": [...], "<key>_ci95": [...]}: plain floats (steps and n as ints), in
    increasing step order, seeds in the order of `histories`; `_ci95` is the half width
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
  curves = {"step": steps, "seeds": len(by_step)}
  for key in keys:
    per_seed = np.array([[records[s][key] for s in steps] for records in by_step],
                        dtype=np.float64)
    mean, half_width = mean_ci95(per_seed)
    curves[f"{key}_per_seed"] = per_seed.tolist()
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


def worst_loss_ratio(history: Sequence[dict], num_classes: int) -> float:
  """The largest logged training loss in units of ln(num_classes), the loss of a uniform
  prediction. A run above SPIKE_RATIO spiked: its steps to target then say more about
  when it recovered than about what it started from."""
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes!r}.")
  if not history:
    raise ValueError("history must hold at least one record.")
  return float(max(r["loss"] for r in history) / math.log(num_classes))


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


MIN_SEEDS_FOR_INTERVAL = 3


def speedup_interval(scratch_steps: Sequence[Optional[int]],
                     variant_steps: Sequence[Optional[int]], resamples: int = 4000,
                     seed: int = 0) -> dict:
  """The speed-up over scratch with a 95% percentile bootstrap interval over seeds.

  Seeds are resampled with replacement, independently for scratch and the variant,
  and the ratio of means recomputed; the interval is the 2.5th to 97.5th percentile.
  With few seeds the bootstrap understates the spread (3 seeds give at most 10
  distinct resamples per side), so read it as a rough interval, not a test; with
  fewer than MIN_SEEDS_FOR_INTERVAL seeds on a side no interval is given at all.

  Returns:
    {"ratio", "ci95_low", "ci95_high"}: `speedup`'s ratio (None if a run never reached
    the target); the bounds are None with fewer than MIN_SEEDS_FOR_INTERVAL seeds on
    either side.
  """
  ratio = speedup(scratch_steps, variant_steps)
  result = {"ratio": ratio, "ci95_low": None, "ci95_high": None}
  if ratio is None or min(len(scratch_steps), len(variant_steps)) < MIN_SEEDS_FOR_INTERVAL:
    return result
  rng = np.random.default_rng(seed)
  scratch = np.asarray(scratch_steps, np.float64)
  variant = np.asarray(variant_steps, np.float64)
  ratios = (rng.choice(scratch, (resamples, scratch.size)).mean(axis=1) /
            rng.choice(variant, (resamples, variant.size)).mean(axis=1))
  low, high = np.percentile(ratios, [2.5, 97.5])
  return {**result, "ci95_low": float(low), "ci95_high": float(high)}
