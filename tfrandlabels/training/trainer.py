"""A custom distributed training loop: the same code on CPU, GPU, several workers or TPU.

Roles (after Model Garden/Orbit): `TrainConfig` says what to do; `_build_state` makes
the model, optimizer, step counter and checkpoint manager; `_make_runner` is the inner
loop, one host call running several steps inside a `tf.function` (a `tf.range` loop) so
accelerators are not starved by Python; `train` is the outer loop,

  while step < total: run to the next stop; check finite; record; emit; checkpoint

where a stop is the next log, checkpoint or eval boundary (at most `steps_per_loop`
steps ahead).

Resume: the step counter and optimizer live in the checkpoint, and the input function
is rebuilt at the restored step (`make_input_fn(start_step=...)`), so a killed run
restarted with the same command continues at exactly the batch it would have seen.
"""
import dataclasses
import functools
import hashlib
import os
import sys
import tempfile
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfrandlabels import errors
from tfrandlabels import io
from tfrandlabels.training import checkpoints
from tfrandlabels.training import divergence
from tfrandlabels.training import optim
from tfrandlabels.training import preemption
from tfrandlabels.training import strategy as strategy_lib

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
HISTORY = "history.jsonl"


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite; the last good checkpoint is kept.

  `event` is what `divergence.record` stores: where, at which rate, and from which
  checkpoint a rerun at a lower rate continues.
  """

  def __init__(self, message, event):
    super().__init__(message)
    self.event = event


@dataclasses.dataclass
class TrainConfig:
  """What one training run does. Every field is a flag of pipelines/run.py."""
  steps: int = 1000
  batch_size: int = 128
  optimizer: str = "sgd"
  learning_rate: float = 0.01
  momentum: float = 0.9
  nesterov: bool = False  # SGD only.
  schedule: str = "constant"
  schedule_boundaries: tuple = (0.5, 0.75)
  warmup_steps: int = 0
  weight_decay: float = 0.0
  precision: str = "float32"
  deterministic: bool = False
  seed: int = 0
  steps_per_loop: int = 50
  log_every: int = 50
  checkpoint_every: int = 200
  eval_every: int = 0  # 0: evaluate at the end only.
  keep_checkpoints: int = 2

  def validate(self):
    for name in ("steps", "batch_size", "steps_per_loop", "log_every", "checkpoint_every",
                 "keep_checkpoints"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}={getattr(self, name)!r} must be >= 1")
    if self.eval_every < 0:
      raise ValueError(f"eval_every={self.eval_every!r} must be >= 0 (0: at the end only)")
    if self.precision not in PRECISIONS:
      raise ValueError(f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
    _make_optimizer(self)


def set_up_determinism(config):
  """Seeds Python, numpy and TF; makes TF ops deterministic in deterministic mode."""
  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()


def _make_optimizer(config, loss_scale=False):
  """The optimizer and learning-rate schedule `config` names."""
  schedule = optim.make_schedule(config.schedule, config.learning_rate, config.steps,
                                 config.schedule_boundaries,
                                 warmup_steps=config.warmup_steps)
  return optim.make_optimizer(config.optimizer, schedule, config.momentum,
                              config.weight_decay, loss_scale=loss_scale,
                              nesterov=config.nesterov)


def _check_hook_names(hooks):
  """Raises ValueError unless every hook has a name of its own (it prefixes its keys)."""
  names = set()
  for hook in hooks:
    name = getattr(hook, "name", None)
    if name is None:
      raise ValueError(f"hook {hook!r} has no `name`; a hook needs one to prefix its "
                       "metrics (e.g. name='alignment')")
    if name in names:
      raise ValueError(f"two hooks are named {name!r}; give each hook its own name")
    names.add(name)


def _check_batch_size(batch_size, replicas):
  """Raises ValueError unless the global batch splits evenly over the replicas."""
  if batch_size % replicas:
    raise ValueError(f"batch_size={batch_size} must be a multiple of the number of "
                     f"replicas ({replicas}); use e.g. batch_size="
                     f"{max(1, batch_size // replicas) * replicas}")


# --- state --------------------------------------------------------------------------


@dataclasses.dataclass
class _State:
  """What a run trains and checkpoints; `manager` saves `checkpoint`."""
  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  step: tf.Variable
  checkpoint: tf.train.Checkpoint
  manager: tf.train.CheckpointManager


def _build_variables(model_fn, config, strategy):
  """Model, built optimizer and step counter, created under the strategy's scope.

  Layers take `config.precision`; the global policy is float32 again afterwards.
  """
  keras.mixed_precision.set_global_policy(config.precision)
  try:
    with strategy.scope():
      model = model_fn()
      optimizer = _make_optimizer(config, loss_scale=config.precision == "mixed_float16")
      optimizer.build(model.trainable_variables)
      step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
  finally:
    keras.mixed_precision.set_global_policy("float32")
  return model, optimizer, step


def _checkpoint_dir(strategy, model_dir):
  """Where this worker saves: non-chief workers must write too (the save is collective),
  but to a local scratch folder, outside the shared workdir, that `train` deletes at
  the end."""
  if strategy_lib.is_chief(strategy):
    return os.path.join(model_dir, checkpoints.FOLDER)
  return tempfile.mkdtemp(prefix=f"tfrandlabels-worker{strategy.cluster_resolver.task_id}-")


def _restore(checkpoint, model_dir):
  """Restores model_dir's newest whole checkpoint, refusing one of another architecture.

  A damaged checkpoint is skipped, with a warning, for the one before it; the history
  past the restored step is dropped (see `_read_history`) and those steps trained again.

  Raises:
    ValueError: the checkpoint is of another model or optimizer.
    ConfigError: there are checkpoints, but none is whole.
  """
  newest = None
  for prefix, reason in checkpoints.checked(os.path.join(model_dir, checkpoints.FOLDER)):
    newest = newest or prefix
    if reason is None:
      try:
        checkpoint.restore(prefix).assert_existing_objects_matched()
        return
      except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
        reason = errors.first_line(e, limit=160)
        raise ValueError(f"model_dir={model_dir!r} holds a checkpoint of another model or "
                         f"optimizer ({reason}); use a new model_dir or delete it") from None
      except (tf.errors.OpError, IndexError) as e:
        reason = errors.first_line(e, limit=120)
    logging.warning("checkpoint %s is damaged (%s); trying the one before it", prefix, reason)
  if newest:
    raise errors.ConfigError(f"model_dir={model_dir!r}: no checkpoint is whole (newest: "
                             f"{newest}); delete {model_dir} to train this run again")


def _build_state(model_fn, config, strategy, model_dir):
  """Builds the run's variables and restores them from model_dir's latest checkpoint."""
  model, optimizer, step = _build_variables(model_fn, config, strategy)
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
  manager = tf.train.CheckpointManager(checkpoint, _checkpoint_dir(strategy, model_dir),
                                       config.keep_checkpoints)
  _restore(checkpoint, model_dir)
  if config.schedule == "constant" and not config.warmup_steps:
    # A restored constant rate is replaced by the configured one: the config rules.
    optim.inner(optimizer).learning_rate = config.learning_rate
  return _State(model, optimizer, step, checkpoint, manager)


# --- inner loop and evaluation ------------------------------------------------------


def _function(fn):
  """`tf.function(fn)`, with TensorFlow's retracing warning counted for this run alone.

  Every `train` call wraps a new model in new step functions, so each traces once.
  TensorFlow's detector counts traces by code object, so from the fifth run in one
  process (every finetuning run) it warns of retracing that is expected. A partial has
  no code object of its own, so the detector counts this instance only, and still
  warns when one run's function really does retrace.
  """
  return tf.function(functools.partial(fn))


def _replica_step(model, optimizer, batch, global_batch_size):
  """One step on one replica; returns this replica's share of loss and correct count."""
  with tf.GradientTape() as tape:
    logits = tf.cast(model(batch["image"], training=True), tf.float32)
    per_example = keras.losses.sparse_categorical_crossentropy(
        batch["label"], logits, from_logits=True)
    # Averaged over the global batch: summing replicas' gradients gives the mean.
    loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
    if model.losses:
      loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
    scaled = optimizer.scale_loss(loss)  # The loss itself unless loss scaling is on.
  gradients = tape.gradient(scaled, model.trainable_variables)
  optimizer.apply_gradients(zip(gradients, model.trainable_variables))
  correct = tf.reduce_sum(tf.cast(
      tf.equal(tf.argmax(logits, -1), tf.cast(batch["label"], tf.int64)), tf.float32))
  return loss, correct


def _make_runner(strategy, state, global_batch_size, dataset):
  """The inner loop: run(num_steps) trains num_steps steps in one host call.

  Args:
    strategy: the tf.distribute.Strategy.
    state: the run's _State; its step counter advances with every step.
    global_batch_size: examples per step over all replicas.
    dataset: the distributed training dataset (read on from where it starts).

  Returns:
    run(num_steps) -> (losses, correct): numpy [num_steps] of each step's loss and
    correct count, summed over replicas.
  """
  iterator = iter(dataset)

  def run_steps(iterator, num_steps):
    losses = tf.TensorArray(tf.float32, size=num_steps)
    correct = tf.TensorArray(tf.float32, size=num_steps)
    for i in tf.range(num_steps):
      loss, right = strategy.run(_replica_step, args=(
          state.model, state.optimizer, next(iterator), global_batch_size))
      losses = losses.write(i, strategy.reduce("SUM", loss, axis=None))
      correct = correct.write(i, strategy.reduce("SUM", right, axis=None))
      state.step.assign_add(1)
    return losses.stack(), correct.stack()

  run_steps = _function(run_steps)

  def run(num_steps):
    return tuple(t.numpy() for t in run_steps(iterator, tf.constant(num_steps)))

  return run


def _eval_replica(model, batch):
  logits = tf.cast(model(batch["image"], training=False), tf.float32)
  per_example = keras.losses.sparse_categorical_crossentropy(
      batch["label"], logits, from_logits=True)
  correct = tf.cast(tf.equal(tf.argmax(logits, -1), tf.cast(batch["label"], tf.int64)),
                    tf.float32)
  count = tf.cast(tf.shape(per_example)[0], tf.float32)
  return tf.reduce_sum(per_example), tf.reduce_sum(correct), count


def _make_evaluator(strategy, model, eval_input):
  """evaluate() -> numpy [loss sum, correct, count] over one pass; None without eval_input."""
  if eval_input is None:
    return None
  dataset = strategy.distribute_datasets_from_function(eval_input)

  def evaluate_dataset(dataset):
    totals = tf.zeros([3])
    for batch in dataset:
      sums = strategy.run(_eval_replica, args=(model, batch))
      totals += tf.stack([strategy.reduce("SUM", s, axis=None) for s in sums])
    return totals

  evaluate_dataset = _function(evaluate_dataset)
  return lambda: evaluate_dataset(dataset).numpy()


# --- outer loop ---------------------------------------------------------------------


def _next_stop(step, config):
  """The step to train to next: the nearest log, checkpoint or eval boundary after
  `step`, at most steps_per_loop ahead and never past config.steps."""
  stops = [config.steps, step + config.steps_per_loop]
  for every in (config.log_every, config.checkpoint_every, config.eval_every):
    if every:
      stops.append((step // every + 1) * every)
  return min(stops)


def _all_finite(model):
  return all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in model.trainable_variables)


def _check_finite(losses, step, state, config):
  """Raises TrainingDiverged if a loss of the steps run after `step`, or a weight, is
  not finite; nothing is checkpointed after that, so the last checkpoint is good."""
  bad = np.flatnonzero(~np.isfinite(losses))
  if not bad.size and not _all_finite(state.model):
    bad = np.array([len(losses) - 1])
  if bad.size:
    latest = state.manager.latest_checkpoint
    event = {"step": int(step + bad[0] + 1), "loss": str(losses[bad[0]]),
             "learning_rate": config.learning_rate,
             "effective_learning_rate": optim.current_learning_rate(state.optimizer),
             "checkpoint_step": checkpoints.step_of(latest) if latest else 0}
    raise TrainingDiverged(
        f"loss is {event['loss']} at step {event['step']} (learning rate "
        f"{event['effective_learning_rate']:.4g}); the last good checkpoint "
        f"({latest or 'none: the initialization'}) is kept; rerun with a lower learning "
        "rate to continue from it", event)


class _Window:
  """The steps run since the last record: their losses, correct counts and start time."""

  def __init__(self):
    self.reset()

  def reset(self):
    self._losses, self._correct = [], []
    self._start = time.perf_counter()

  def add(self, losses, correct):
    self._losses.append(losses)
    self._correct.append(correct)

  def record(self, step, batch_size, optimizer):
    """The history record of the window: mean loss, accuracy, learning rate, speed."""
    seconds = time.perf_counter() - self._start
    losses, correct = np.concatenate(self._losses), np.concatenate(self._correct)
    return {"step": step, "loss": float(np.mean(losses)),
            "accuracy": float(np.sum(correct) / (losses.size * batch_size)),
            "learning_rate": optim.current_learning_rate(optimizer),
            "images_per_second": losses.size * batch_size / seconds}


def _is_log_step(step, config):
  return step % config.log_every == 0 or step >= config.steps


def _maybe_evaluate(step, config, evaluate):
  """eval_loss and eval_accuracy at eval_every steps and at the end; else {}."""
  due = step >= config.steps or (config.eval_every and step % config.eval_every == 0)
  if evaluate is None or not due:
    return {}
  loss_sum, right, count = evaluate()
  return {"eval_loss": float(loss_sum / count), "eval_accuracy": float(right / count)}


def _hook_values(hooks, step, model):
  """Every hook's values at `step`, each key prefixed with its hook's name."""
  return {f"{hook.name}/{key}": value
          for hook in hooks for key, value in hook(step, model).items()}


class _Progress:
  """A progress bar on an interactive terminal, plain log lines otherwise."""

  def __init__(self, total, start):
    self._bar = keras.utils.Progbar(total) if sys.stdout.isatty() else None
    if self._bar:
      self._bar.update(start)

  def update(self, record):
    if self._bar:
      self._bar.update(record["step"], [(k, record[k]) for k in ("loss", "accuracy")])
    else:
      logging.info("step %d: %s", record["step"], ", ".join(
          f"{k}={v:.4g}" for k, v in sorted(record.items()) if k != "step" and
          isinstance(v, float)))


class _Outputs:
  """Where the chief emits each record: history.jsonl, TensorBoard and progress."""

  def __init__(self, model_dir, history, total, start):
    self._history_path = os.path.join(model_dir, HISTORY)
    self._history = history
    self._writer = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard"))
    self._progress = _Progress(total, start)

  def emit(self, record):
    self._history.append(record)
    io.write_jsonl(self._history_path, self._history)
    with self._writer.as_default(step=record["step"]):
      for key, value in record.items():
        if key != "step" and isinstance(value, (int, float)):  # Lists are no scalars.
          tf.summary.scalar(key, value)
    self._writer.flush()
    self._progress.update(record)


def _read_history(model_dir, start):
  """The records of model_dir's history up to `start`."""
  try:
    records = io.read_jsonl(os.path.join(model_dir, HISTORY))
  except io.DamagedFile as e:
    raise errors.ConfigError(f"{e}; delete {model_dir} to train this run again") from None
  # Records past the checkpoint belong to steps that will be run again.
  return [r for r in records if r["step"] <= start]


def _train_loop(config, state, run, evaluate, outputs, hooks, strategy, model_dir):
  """Trains from the state's step to config.steps; returns the last record.

  Checkpoints every config.checkpoint_every steps and at the end; on SIGTERM (see
  `preemption`) at the next log step, then raises Preempted.

  Args:
    config: the TrainConfig.
    state: the run's _State.
    run: run(num_steps) -> (losses, correct), from `_make_runner`.
    evaluate: from `_make_evaluator`, or None.
    outputs: the chief's _Outputs; None on other workers.
    hooks: called at every log step (the chief's; () on other workers).
    strategy: the run's strategy (its workers agree on when to stop).
    model_dir: the run's folder, named in the Preempted message.
  """
  window = _Window()
  step = int(state.step.numpy())
  while step < config.steps:
    stop = _next_stop(step, config)
    losses, correct = run(stop - step)
    _check_finite(losses, step, state, config)
    window.add(losses, correct)
    step = stop
    if _is_log_step(step, config):
      record = {**window.record(step, config.batch_size, state.optimizer),
                **_maybe_evaluate(step, config, evaluate),
                **_hook_values(hooks, step, state.model)}
      if outputs is not None:
        outputs.emit(record)
      window.reset()
    stopping = _is_log_step(step, config) and preemption.agreed_stop(strategy)
    if stopping or step % config.checkpoint_every == 0 or step >= config.steps:
      state.manager.save(checkpoint_number=step)
    if stopping and step < config.steps:
      raise preemption.Preempted(
          f"stopped on SIGTERM at step {step} of {config.steps}; checkpoint saved in "
          f"{model_dir}: run the same command to resume from it")
  return record


def train(*, model_fn, train_input, config, strategy, model_dir, eval_input=None,
          hooks=()):
  """Trains (or resumes training) until `config.steps`; returns the final metrics.

  Args:
    model_fn: () -> keras.Model, called under the strategy's scope.
    train_input: start_step -> input_fn for `distribute_datasets_from_function`
      (e.g. functools.partial of `make_input_fn` with everything but start_step).
    config: a TrainConfig.
    strategy: a tf.distribute.Strategy.
    model_dir: checkpoints, history.jsonl and TensorBoard logs go here (local, gs://,
      ram://). A run already there is resumed; a finished run trains no more.
    eval_input: optional input_fn of the held-out split (one pass).
    hooks: objects with a distinct `name` and `__call__(step, model) -> dict`, called
      at every log step (chief only); each value is added to the history record as
      `f"{hook.name}/{key}"`.

  Returns:
    (model, record): the trained model (this worker's replica) and the last history
    record (step, loss, accuracy, learning_rate, images_per_second, eval_* ...).

  Raises:
    TrainingDiverged: the loss or a weight became NaN or infinite; no checkpoint is
      written after that, so the last one saved holds finite weights, and the event is
      appended to model_dir's divergence.json (see `divergence`). A rerun at a lower
      learning rate continues from that checkpoint.
    preemption.Preempted: SIGTERM arrived inside `preemption.watch()`; a checkpoint at
      the next log step was saved and training stopped there.
    ValueError: bad configuration, two hooks of one name, or model_dir holds another
      model's checkpoint.
    ConfigError: model_dir's history is damaged, it has checkpoints but none whole, or
      it diverged at a learning rate no higher than config.learning_rate.
  """
  config.validate()
  hooks = tuple(hooks)
  _check_hook_names(hooks)
  _check_batch_size(config.batch_size, strategy.num_replicas_in_sync)
  diverged = divergence.check_continuation(model_dir, config.learning_rate)
  set_up_determinism(config)
  state = _build_state(model_fn, config, strategy, model_dir)
  start = int(state.step.numpy())
  history = _read_history(model_dir, start)
  chief = strategy_lib.is_chief(strategy)
  if diverged is not None:
    logging.warning("%s diverged at step %d with learning rate %g; continuing from step %d "
                    "at learning rate %g", model_dir, diverged["step"],
                    diverged["learning_rate"], start, config.learning_rate)
    if chief:
      divergence.mark_continued(model_dir, config.learning_rate, start)
  if start >= config.steps:
    logging.info("%s: already trained %d steps; nothing to do", model_dir, start)
    return state.model, _with_divergences(history[-1] if history else {"step": start},
                                          model_dir)
  run = _make_runner(strategy, state, config.batch_size,
                     strategy.distribute_datasets_from_function(train_input(start)))
  evaluate = _make_evaluator(strategy, state.model, eval_input)
  outputs = _Outputs(model_dir, history, config.steps, start) if chief else None
  try:
    with preemption.deferred():
      record = _train_loop(config, state, run, evaluate, outputs, hooks if chief else (),
                           strategy, model_dir)
  except TrainingDiverged as e:
    if chief:
      divergence.record(model_dir, e.event)
    raise
  finally:
    if not chief:
      tf.io.gfile.rmtree(state.manager.directory)
  logging.info("%s: trained to step %d; weights digest %s", model_dir, config.steps,
               weights_digest(state.model))
  return state.model, _with_divergences(record, model_dir)


def _with_divergences(record, model_dir):
  """The final record, with the run's divergence events if it had any (a run trained
  at two rates says so in its DONE marker)."""
  events = divergence.events(model_dir)
  return {**record, "divergences": events} if events else record


def weights_digest(model):
  """A short hash of a model's weights: equal on every worker of a synchronous run."""
  digest = hashlib.sha256()
  for value in model.get_weights():
    digest.update(np.ascontiguousarray(value).tobytes())
  return digest.hexdigest()[:16]


def load_weights(model, model_dir):
  """Loads the newest checkpoint's weights from model_dir into `model` (expect_partial).

  Raises:
    ConfigError: model_dir holds no checkpoint, or its newest one is damaged.
  """
  prefix, reason = next(checkpoints.checked(os.path.join(model_dir, checkpoints.FOLDER)),
                        (None, None))
  if prefix is None:
    raise errors.ConfigError(f"model_dir={model_dir!r} holds no checkpoint")
  if reason is None:
    try:
      tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
      return model
    except (tf.errors.OpError, IndexError) as e:
      reason = errors.first_line(e, limit=120)
  raise errors.ConfigError(
      f"checkpoint {prefix} is damaged ({reason}); delete its files and rerun: the run "
      "trains again from the checkpoint before it")
