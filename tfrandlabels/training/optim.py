"""Optimizers and learning-rate schedules, each chosen by name."""
import keras

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "cosine")


class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
  """Rises linearly from learning_rate / warmup_steps at step 0 to `schedule` at
  `warmup_steps`, then follows `schedule` (which keeps counting from step 0).

  A short warm-up lets SGD shrink the loss's curvature before taking full-size steps:
  a wide dense layer on non-negative features (simple_cnn's 230k-input dense1) is
  otherwise thrown far off in the first steps and recovers only after a loss spike.
  """

  def __init__(self, schedule, warmup_steps):
    self.schedule = schedule
    self.warmup_steps = warmup_steps

  def __call__(self, step):
    step = keras.ops.cast(step, "float32")
    target = self.schedule(step) if callable(self.schedule) else self.schedule
    ramp = keras.ops.minimum(1.0, (step + 1.0) / float(self.warmup_steps))
    return target * ramp

  def get_config(self):
    return {"schedule": self.schedule, "warmup_steps": self.warmup_steps}


def make_schedule(name, learning_rate, total_steps, boundaries=(), decay=0.1,
                  warmup_steps=0):
  """Learning rate as a function of the step.

  Args:
    name: `constant`; `step` (multiplied by `decay` at each of `boundaries`, given as
      fractions of total_steps, e.g. (0.5, 0.75)); or `cosine` (to zero at total_steps).
    learning_rate: the initial learning rate (> 0).
    total_steps: training length in steps.
    boundaries: for `step`, fractions in (0, 1).
    decay: for `step`, the factor applied at each boundary.
    warmup_steps: steps of linear warm-up in front of the schedule (0: none).
  """
  if warmup_steps < 0:
    raise ValueError(f"warmup_steps={warmup_steps!r} must be >= 0")
  schedule = _schedule(name, learning_rate, total_steps, boundaries, decay)
  return LinearWarmup(schedule, warmup_steps) if warmup_steps else schedule


def _schedule(name, learning_rate, total_steps, boundaries, decay):
  if name not in SCHEDULES:
    raise ValueError(f"schedule={name!r} is not one of {', '.join(SCHEDULES)}")
  if not learning_rate > 0:
    raise ValueError(f"learning_rate={learning_rate!r} must be > 0")
  if name == "constant":
    return learning_rate
  if name == "cosine":
    return keras.optimizers.schedules.CosineDecay(learning_rate, max(1, total_steps))
  if not boundaries or any(not 0 < b < 1 for b in boundaries):
    raise ValueError(f"schedule_boundaries={list(boundaries)} must be fractions in (0, 1) "
                     "for schedule='step'")
  steps = [max(1, int(b * total_steps)) for b in sorted(boundaries)]
  values = [learning_rate * decay ** i for i in range(len(steps) + 1)]
  return keras.optimizers.schedules.PiecewiseConstantDecay(steps, values)


def make_optimizer(name, schedule, momentum=0.9, weight_decay=0.0, loss_scale=False,
                   nesterov=False):
  """SGD with heavy-ball (or, with `nesterov`, Nesterov) momentum, or Adam; decoupled
  weight decay when > 0.

  With `loss_scale` (mixed_float16 on GPU) the optimizer scales the loss dynamically
  so small float16 gradients do not underflow.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer={name!r} is not one of {', '.join(OPTIMIZERS)}")
  if weight_decay < 0:
    raise ValueError(f"weight_decay={weight_decay!r} must be >= 0")
  if nesterov and name != "sgd":
    raise ValueError(f"nesterov=True needs optimizer='sgd', not {name!r}")
  decay = weight_decay or None
  if name == "sgd":
    optimizer = keras.optimizers.SGD(schedule, momentum=momentum, nesterov=nesterov,
                                     weight_decay=decay)
  else:
    optimizer = keras.optimizers.Adam(schedule, weight_decay=decay)
  return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scale else optimizer


def inner(optimizer):
  """The optimizer that holds the learning rate (unwraps loss scaling)."""
  return getattr(optimizer, "inner_optimizer", optimizer)


def current_learning_rate(optimizer):
  """The learning rate the optimizer applies at its current iteration, as a float."""
  return float(keras.ops.convert_to_numpy(inner(optimizer).learning_rate))
