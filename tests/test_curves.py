"""Tests for tfrandlabels.analysis.curves against hand computations."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from tfrandlabels.analysis import curves


def record(step, accuracy, loss, **extra):
  return {"step": step, "accuracy": accuracy, "loss": loss, **extra}


def test_mean_ci95_matches_student_t_by_hand():
  values = np.array([[1.0, 10.0], [2.0, 14.0], [4.0, 9.0]])
  mean, half_width = curves.mean_ci95(values)
  for j in range(values.shape[1]):
    column = values[:, j]
    sd = math.sqrt(sum((v - column.mean()) ** 2 for v in column) / (len(column) - 1))
    expected = stats.t.ppf(0.975, len(column) - 1) * sd / math.sqrt(len(column))
    assert mean[j] == pytest.approx(column.mean())
    assert half_width[j] == pytest.approx(expected)
  # Two seeds: t_{0.975, 1} = 12.706..., so the interval is wide.
  _, two = curves.mean_ci95([[0.0], [1.0]])
  assert two[0] == pytest.approx(12.7062047 * math.sqrt(0.5) / math.sqrt(2), rel=1e-6)


def test_mean_ci95_single_seed_has_zero_width():
  mean, half_width = curves.mean_ci95([[0.3, 0.7]])
  np.testing.assert_allclose(mean, [0.3, 0.7])
  np.testing.assert_array_equal(half_width, [0.0, 0.0])


@pytest.mark.parametrize("values", [[1.0, 2.0], np.zeros((0, 3)), np.zeros((2, 2, 2))])
def test_mean_ci95_rejects_bad_shapes(values):
  with pytest.raises(ValueError, match="values must be a \\[seeds, points\\]"):
    curves.mean_ci95(values)


def test_learning_curves_align_on_common_steps():
  histories = [
      [record(10, 0.2, 2.0), record(20, 0.5, 1.0), record(30, 0.9, 0.5)],
      [record(20, 0.7, 0.8), record(10, 0.4, 1.6)],  # shorter and out of order
  ]
  result = curves.learning_curves(histories)
  assert result["step"] == [10, 20]
  mean, half_width = curves.mean_ci95([[0.2, 0.5], [0.4, 0.7]])
  np.testing.assert_allclose(result["accuracy_mean"], mean)
  np.testing.assert_allclose(result["accuracy_ci95"], half_width)
  np.testing.assert_allclose(result["loss_mean"], [1.8, 0.9])
  assert set(result) == {"step", "seeds", "accuracy_per_seed", "accuracy_mean", "accuracy_ci95",
                         "loss_per_seed", "loss_mean", "loss_ci95"}
  json.dumps(result)  # plain lists of Python numbers
  assert all(type(s) is int for s in result["step"])
  assert type(result["seeds"]) is int
  assert all(type(v) is float for v in result["loss_ci95"])
  assert all(type(v) is float for row in result["loss_per_seed"] for v in row)


def test_learning_curves_per_seed_rows_are_the_seeds_values_at_the_common_steps():
  rng = np.random.default_rng(0)
  values = rng.uniform(size=(3, 5, 2))  # [seed, step, (accuracy, loss)]
  steps = [10, 20, 30, 40, 50]
  histories = [[record(step, *values[seed, i]) for i, step in enumerate(steps)]
               + [record(60 + seed, 0.0, 0.0)]  # a step only this seed logged
               for seed in range(3)]
  result = curves.learning_curves(histories)
  assert result["seeds"] == 3
  assert result["step"] == steps
  for index, key in enumerate(("accuracy", "loss")):
    per_seed = np.array(result[f"{key}_per_seed"])
    np.testing.assert_array_equal(per_seed, values[..., index])
    np.testing.assert_allclose(result[f"{key}_mean"], values[..., index].mean(axis=0))
    np.testing.assert_allclose(result[f"{key}_ci95"],
                               stats.t.ppf(0.975, 2) * values[..., index].std(axis=0, ddof=1)
                               / math.sqrt(3))


def test_learning_curves_skip_records_without_the_key_and_keep_the_last_duplicate():
  histories = [
      [record(10, 0.1, 2.0), record(20, 0.3, 1.0, eval_accuracy=0.25),
       record(20, 0.35, 0.9, eval_accuracy=0.3)],
      [record(10, 0.2, 1.5, eval_accuracy=0.1), record(20, 0.4, 0.7, eval_accuracy=0.5)],
  ]
  result = curves.learning_curves(histories, keys=("eval_accuracy",))
  assert result["step"] == [20]
  np.testing.assert_allclose(result["eval_accuracy_mean"], [0.4])


@pytest.mark.parametrize("histories, keys, match", [
    ([], ("accuracy",), "histories must hold"),
    ([[record(10, 0.1, 1.0)], [record(20, 0.2, 1.0)]], ("accuracy",), "share no step"),
    ([[record(10, 0.1, 1.0)]], "accuracy", "keys must be a non-empty sequence"),
])
def test_learning_curves_bad_input(histories, keys, match):
  with pytest.raises(ValueError, match=match):
    curves.learning_curves(histories, keys)


def test_steps_to_target_is_the_first_logged_step_at_or_above():
  history = [record(30, 0.95, 0.1), record(10, 0.5, 1.0), record(20, 0.9, 0.3),
             {"step": 25, "loss": 0.2}]
  assert curves.steps_to_target(history, 0.9) == 20
  assert curves.steps_to_target(history, 0.91) == 30
  assert curves.steps_to_target(history, 0.99) is None
  assert curves.steps_to_target(history, 0.25, key="loss") == 10
  assert curves.steps_to_target([], 0.5) is None


@pytest.mark.parametrize("target", [float("nan"), "0.9", None, True])
def test_steps_to_target_rejects_bad_target(target):
  with pytest.raises(ValueError, match="target must be a finite number"):
    curves.steps_to_target([record(10, 0.5, 1.0)], target)


def test_worst_loss_ratio_is_the_largest_loss_over_ln_c():
  history = [{"step": 10, "loss": 9.2}, {"step": 20, "loss": 1.0}, {"step": 30, "loss": 0.5}]
  assert curves.worst_loss_ratio(history, 10) == pytest.approx(9.2 / np.log(10))
  assert curves.worst_loss_ratio(history[1:], 2) == pytest.approx(1 / np.log(2))
  with pytest.raises(ValueError, match="num_classes must be >= 2"):
    curves.worst_loss_ratio(history, 1)
  with pytest.raises(ValueError, match="at least one record"):
    curves.worst_loss_ratio([], 10)


def test_speedup_is_ratio_of_means():
  assert curves.speedup([100, 300], [50, 50]) == pytest.approx(4.0)
  assert curves.speedup([100], [400]) == pytest.approx(0.25)
  assert curves.speedup([100, None], [50, 50]) is None
  assert curves.speedup([100, 200], [None, 50]) is None


@pytest.mark.parametrize("scratch, variant, match", [
    ([], [10], "scratch_steps must hold"),
    ([10], [], "variant_steps must hold"),
    ([10], [0], "steps to target must be > 0"),
])
def test_speedup_bad_input(scratch, variant, match):
  with pytest.raises(ValueError, match=match):
    curves.speedup(scratch, variant)


def test_speedup_interval_is_a_percentile_bootstrap_of_the_ratio_of_means():
  scratch, variant = [120, 80, 100, 90], [60, 50, 70]
  result = curves.speedup_interval(scratch, variant, resamples=500, seed=3)
  assert result["ratio"] == pytest.approx(np.mean(scratch) / np.mean(variant))
  rng = np.random.default_rng(3)
  ratios = (rng.choice(np.array(scratch, float), (500, 4)).mean(1) /
            rng.choice(np.array(variant, float), (500, 3)).mean(1))
  assert [result["ci95_low"], result["ci95_high"]] == pytest.approx(
      np.percentile(ratios, [2.5, 97.5]).tolist())
  assert result["ci95_low"] < result["ratio"] < result["ci95_high"]
  same = curves.speedup_interval([100, 100, 100], [50, 50, 50])
  assert same == {"ratio": 2.0, "ci95_low": 2.0, "ci95_high": 2.0}


def test_speedup_interval_needs_three_seeds_a_side():
  assert curves.speedup_interval([120, 80], [60, 60]) == {
      "ratio": pytest.approx(100 / 60), "ci95_low": None, "ci95_high": None}
  assert curves.speedup_interval([120, None, 80], [60, 60, 60])["ratio"] is None
