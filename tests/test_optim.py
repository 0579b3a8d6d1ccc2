"""Learning-rate schedules: the warm-up against its closed form, and bad settings."""
import numpy as np
import pytest

from tfrandlabels.training import optim


def _rates(schedule, steps):
  return np.array([float(schedule(step)) for step in steps])


@pytest.mark.parametrize("name", ["constant", "cosine"])
def test_warmup_ramps_linearly_then_follows_the_schedule(name):
  steps = np.arange(0, 100, 7)
  plain = optim.make_schedule(name, 0.02, 100)
  warm = optim.make_schedule(name, 0.02, 100, warmup_steps=30)
  target = np.full(steps.shape, 0.02) if name == "constant" else _rates(plain, steps)
  np.testing.assert_allclose(_rates(warm, steps),
                             target * np.minimum(1.0, (steps + 1) / 30), rtol=1e-6)


def test_no_warmup_is_the_plain_schedule():
  assert optim.make_schedule("constant", 0.02, 100, warmup_steps=0) == 0.02


def test_the_optimizer_reports_the_warmed_up_rate():
  optimizer = optim.make_optimizer("sgd", optim.make_schedule("constant", 0.01, 50,
                                                              warmup_steps=10))
  assert optim.current_learning_rate(optimizer) == pytest.approx(0.001)


def test_negative_warmup_is_refused():
  with pytest.raises(ValueError, match="warmup_steps=-1 must be >= 0"):
    optim.make_schedule("constant", 0.01, 100, warmup_steps=-1)
