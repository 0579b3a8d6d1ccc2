"""A custom distributed training loop: the same code on CPU, GPU, several workers or TPU.

Roles (after Model Garden/Orbit): `TrainConfig` says what to do; `train` owns the loop,
checkpoints, evaluation and logs. One host call runs `steps_per_loop` steps inside a
`tf.function` (a `tf.range` loop), so accelerators are not starved by Python.

Resume: the step counter and optimizer live in the checkpoint, and the input function
is rebuilt at the restored step (`make_input_fn(start_step=...)`), so a killed run
restarted with the same command continues at exactly the batch it would have seen.
"""
import dataclasses
import os
import sys
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfrandlabels import io
from tfrandlabels.training import optim
from tfrandlabels.training import strategy as strategy_lib

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
HISTORY = "history.jsonl"


class TrainingDiverged(RuntimeError):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainConfig:
  """What one training run does. Every field is a flag of pipelines/run.py."""
  steps: int = 1000
  batch_size: int = 128
  optimizer: str = "sgd"
  learning_rate: float = 0.01
  momentum: float = 0.9
  schedule: str = "constant"
  schedule_boundaries: tuple = (0.5, 0.75)
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
    optim.make_optimizer(self.optimizer, optim.make_schedule(
        self.schedule, self.learning_rate, self.steps, self.schedule_boundaries),
                         self.momentum, self.weight_decay)


def set_up_determinism(config):
  """Seeds Python, numpy and TF; makes TF ops deterministic in deterministic mode."""
  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()


def _replica_step(model, optimizer, batch, global_batch_size, loss_scale):
  """One step on one replica; returns this replica's share of loss and correct count."""
  with tf.GradientTape() as tape:
    logits = tf.cast(model(batch["image"], training=True), tf.float32)
    per_example = keras.losses.sparse_categorical_crossentropy(
        batch["label"], logits, from_logits=True)
    # Averaged over the global batch: summing replicas' gradients gives the mean.
    loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
    if model.losses:
      loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
    scaled = optimizer.scale_loss(loss) if loss_scale else loss
  gradients = tape.gradient(scaled, model.trainable_variables)
  optimizer.apply_gradients(zip(gradients, model.trainable_variables))
  correct = tf.reduce_sum(tf.cast(
      tf.equal(tf.argmax(logits, -1), tf.cast(batch["label"], tf.int64)), tf.float32))
  return loss, correct


def _eval_replica(model, batch):
  logits = tf.cast(model(batch["image"], training=False), tf.float32)
  per_example = keras.losses.sparse_categorical_crossentropy(
      batch["label"], logits, from_logits=True)
  correct = tf.cast(tf.equal(tf.argmax(logits, -1), tf.cast(batch["label"], tf.int64)),
                    tf.float32)
  count = tf.cast(tf.shape(per_example)[0], tf.float32)
  return tf.reduce_sum(per_example), tf.reduce_sum(correct), count


def _all_finite(model):
  return all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in model.trainable_variables)


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


def _restore(manager, checkpoint, model_dir):
  """Restores the latest checkpoint, refusing one written by another architecture."""
  if not manager.latest_checkpoint:
    return
  try:
    checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
    reason = str(e).strip().splitlines()[0][:160]
    raise ValueError(f"model_dir={model_dir!r} holds a checkpoint of another model or "
                     f"optimizer ({reason}); use a new --workdir, or --force to start over"
                     ) from None


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
    hooks: callables hook(step, model) -> dict, called at every log step (chief
      only); their values are added to the history record.

  Returns:
    (model, record): the trained model (this worker's replica) and the last history
    record (step, loss, accuracy, learning_rate, images_per_second, eval_* ...).

  Raises:
    TrainingDiverged: the loss or a weight became NaN or infinite; no checkpoint is
      written after that, so the last one saved holds finite weights.
    ValueError: bad configuration, or model_dir holds another model's checkpoint.
  """
  config.validate()
  chief = strategy_lib.is_chief(strategy)
  replicas = strategy.num_replicas_in_sync
  if config.batch_size % replicas:
    raise ValueError(f"batch_size={config.batch_size} must be a multiple of the number of "
                     f"replicas ({replicas}); use e.g. --batch_size="
                     f"{max(1, config.batch_size // replicas) * replicas}")
  set_up_determinism(config)
  keras.mixed_precision.set_global_policy(config.precision)
  loss_scale = config.precision == "mixed_float16"
  try:
    with strategy.scope():
      model = model_fn()
      optimizer = optim.make_optimizer(
          config.optimizer, optim.make_schedule(config.schedule, config.learning_rate,
                                                config.steps, config.schedule_boundaries),
          config.momentum, config.weight_decay, loss_scale=loss_scale)
      optimizer.build(model.trainable_variables)
      step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
  finally:
    keras.mixed_precision.set_global_policy("float32")
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
  # Non-chief workers must write too (the save is collective) but to a scratch folder.
  checkpoint_dir = os.path.join(model_dir, "checkpoints")
  if not chief:
    checkpoint_dir = os.path.join(model_dir, "scratch", f"worker{strategy.cluster_resolver.task_id}")
  manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, config.keep_checkpoints)
  _restore(tf.train.CheckpointManager(checkpoint, os.path.join(model_dir, "checkpoints"), 1),
           checkpoint, model_dir)
  if config.schedule == "constant":
    # A restored constant rate is replaced by the configured one: the config rules.
    optim.inner(optimizer).learning_rate = config.learning_rate
  start = int(step.numpy())
  history_path = os.path.join(model_dir, HISTORY)
  # Records past the checkpoint belong to steps that will be run again.
  history = [r for r in io.read_jsonl(history_path) if r["step"] <= start]
  if start >= config.steps:
    logging.info("%s: already trained %d steps; nothing to do", model_dir, start)
    return model, (history[-1] if history else {"step": start})

  iterator = iter(strategy.distribute_datasets_from_function(train_input(start)))

  @tf.function
  def train_loop(iterator, num_steps):
    losses = tf.TensorArray(tf.float32, size=num_steps)
    correct = tf.TensorArray(tf.float32, size=num_steps)
    for i in tf.range(num_steps):
      loss, right = strategy.run(_replica_step, args=(
          model, optimizer, next(iterator), config.batch_size, loss_scale))
      losses = losses.write(i, strategy.reduce("SUM", loss, axis=None))
      correct = correct.write(i, strategy.reduce("SUM", right, axis=None))
      step.assign_add(1)
    return losses.stack(), correct.stack()

  @tf.function
  def evaluate(dataset):
    totals = tf.zeros([3])
    for batch in dataset:
      sums = strategy.run(_eval_replica, args=(model, batch))
      totals += tf.stack([strategy.reduce("SUM", s, axis=None) for s in sums])
    return totals

  writer = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard")) \
      if chief else tf.summary.create_noop_writer()
  progress = _Progress(config.steps, start) if chief else None
  eval_dataset = strategy.distribute_datasets_from_function(eval_input) if eval_input else None
  window = []  # (loss, correct) of the steps since the last log.
  window_start = time.perf_counter()
  record = history[-1] if history else {"step": start}
  current = start
  while current < config.steps:
    boundaries = [config.steps, current + config.steps_per_loop]
    for every in (config.log_every, config.checkpoint_every, config.eval_every):
      if every:
        boundaries.append((current // every + 1) * every)
    num_steps = min(boundaries) - current
    losses, correct = (t.numpy() for t in train_loop(iterator, tf.constant(num_steps)))
    bad = np.flatnonzero(~np.isfinite(losses))
    if not bad.size and not _all_finite(model):
      bad = np.array([num_steps - 1])
    if bad.size:
      raise TrainingDiverged(
          f"loss is {losses[bad[0]]} at step {current + bad[0] + 1} (learning rate "
          f"{optim.current_learning_rate(optimizer):.4g}); the last good checkpoint "
          f"({manager.latest_checkpoint or 'none'}) is kept; lower --learning_rate")
    window.extend(zip(losses, correct))
    current += num_steps
    done = current >= config.steps
    if current % config.log_every == 0 or done:
      seconds = time.perf_counter() - window_start
      record = {"step": current, "loss": float(np.mean([w[0] for w in window])),
                "accuracy": float(np.sum([w[1] for w in window]) /
                                  (len(window) * config.batch_size)),
                "learning_rate": optim.current_learning_rate(optimizer),
                "images_per_second": len(window) * config.batch_size / seconds}
      if eval_dataset is not None and (done or (config.eval_every and
                                                current % config.eval_every == 0)):
        loss_sum, right, count = evaluate(eval_dataset).numpy()
        record.update(eval_loss=float(loss_sum / count), eval_accuracy=float(right / count))
      if chief:
        for hook in hooks:
          record.update(hook(current, model))
        history.append(record)
        io.write_jsonl(history_path, history)
        with writer.as_default(step=current):
          for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
              tf.summary.scalar(key, value)
        writer.flush()
        progress.update(record)
      window, window_start = [], time.perf_counter()
    if current % config.checkpoint_every == 0 or done:
      manager.save(checkpoint_number=current)
  if not chief:
    tf.io.gfile.rmtree(checkpoint_dir)
  return model, record


def load_weights(model, model_dir):
  """Loads the latest checkpoint's weights from model_dir into `model` (expect_partial)."""
  path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
  if path is None:
    raise ValueError(f"model_dir={model_dir!r} holds no checkpoint")
  tf.train.Checkpoint(model=model).restore(path).expect_partial()
  return model
