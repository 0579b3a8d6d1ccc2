"""Trainer: strategies agree, killed runs resume exactly, retracing.

Workers staying in sync is tested on the pipeline command (test_multi_worker.py)."""
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrandlabels import data
from tfrandlabels import models
from tfrandlabels.analysis import alignment
from tfrandlabels.data import ops
from tfrandlabels.errors import ConfigError
from tfrandlabels.training import checkpoints
from tfrandlabels.training import divergence
from tfrandlabels.training import hooks as hooks_lib
from tfrandlabels.training import preemption
from tfrandlabels.training import strategy as strategy_lib
from tfrandlabels.training import trainer

import trainer_worker

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "trainer_worker.py")


def _run_worker(*args, env=None, wait=True):
  env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", ""),
         "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
  process = subprocess.Popen([sys.executable, WORKER, *map(str, args)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  if wait:
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-3000:]
  return process


def _weights(path):
  with np.load(path) as f:
    return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


@pytest.fixture(scope="module")
def reference(embedded_dir, tmp_path_factory):
  """Eight deterministic steps on one device."""
  folder = tmp_path_factory.mktemp("reference")
  _run_worker(folder / "model", 8, "default", folder / "weights.npz")
  return folder


def test_mirrored_over_two_cpus_matches_one_device(reference, tmp_path):
  _run_worker(tmp_path / "model", 8, "mirrored", tmp_path / "weights.npz", 2)
  for a, b in zip(_weights(reference / "weights.npz"), _weights(tmp_path / "weights.npz")):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_killed_run_resumes_to_the_same_weights(reference, tmp_path):
  model_dir = tmp_path / "model"
  process = _run_worker(model_dir, 8, "default", tmp_path / "unused.npz", wait=False)
  deadline = time.time() + 300
  while not tf.train.latest_checkpoint(str(model_dir / "checkpoints")):
    assert process.poll() is None and time.time() < deadline, "no checkpoint written"
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  interrupted_at = int(tf.train.latest_checkpoint(str(model_dir / "checkpoints")).split("-")[-1])
  assert interrupted_at < 8  # Killed mid-run, not after finishing.
  _run_worker(model_dir, 8, "default", tmp_path / "weights.npz")
  for a, b in zip(_weights(reference / "weights.npz"), _weights(tmp_path / "weights.npz")):
    np.testing.assert_array_equal(a, b)
  steps = [json.loads(line)["step"] for line in open(model_dir / "history.jsonl")]
  assert steps == [2, 4, 6, 8]


class _SigtermAt:
  """A hook that sends this process SIGTERM at one log step, as a preempted VM would."""
  name = "sigterm"

  def __init__(self, step):
    self.step = step

  def __call__(self, step, model):
    del model
    if step == self.step:
      os.kill(os.getpid(), signal.SIGTERM)
    return {}


def test_sigterm_checkpoints_at_the_log_step_and_resumes_to_the_same_weights(reference,
                                                                             tmp_path):
  model_dir = str(tmp_path / "model")
  strategy = tf.distribute.get_strategy()
  with preemption.watch():
    with pytest.raises(preemption.Preempted, match=r"^stopped on SIGTERM at step 4 of 8; "
                       r"checkpoint saved in .*: run the same command to resume from it$"):
      trainer_worker.run(model_dir, 8, strategy, checkpoint_every=100,
                         extra_hooks=[_SigtermAt(4)])
  assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("-4")
  model = trainer_worker.run(model_dir, 8, strategy, checkpoint_every=100)
  for a, b in zip(_weights(reference / "weights.npz"), model.get_weights()):
    np.testing.assert_array_equal(a, b)
  steps = [json.loads(line)["step"] for line in open(os.path.join(model_dir, "history.jsonl"))]
  assert steps == [2, 4, 6, 8]


def test_sigterm_outside_training_stops_at_once_and_inside_waits_for_the_trainer():
  previous = signal.getsignal(signal.SIGTERM)
  with preemption.watch():
    with pytest.raises(preemption.Preempted, match="finished stages and runs are kept"):
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)  # The handler raises as soon as the signal arrives.
    with pytest.raises(preemption.Preempted):
      with preemption.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.requested()  # Recorded, not raised: the trainer decides.
  assert signal.getsignal(signal.SIGTERM) is previous and not preemption.requested()


def test_finished_run_trains_no_more(reference):
  before = os.path.getmtime(reference / "model" / "history.jsonl")
  model, record = trainer.train(
      model_fn=lambda: models.build_model("simple_cnn", 10, (32, 32, 3), filters=16,
                                          hidden=16, seed=0),
      train_input=lambda start: pytest.fail("a finished run must not read data"),
      config=trainer.TrainConfig(steps=8, batch_size=32), strategy=tf.distribute.get_strategy(),
      model_dir=str(reference / "model"))
  assert record["step"] == 8
  assert os.path.getmtime(reference / "model" / "history.jsonl") == before
  for a, b in zip(_weights(reference / "weights.npz"), model.get_weights()):
    np.testing.assert_array_equal(a, b)


def _tiny_train(tmp_path, hooks=(), **overrides):
  x = np.random.default_rng(0).normal(size=(64, 4, 4, 1)).astype(np.float32)
  source = lambda: tf.data.Dataset.from_tensor_slices({
      "image": (np.abs(x) * 40).astype(np.uint8), "label": np.arange(64, dtype=np.int64) % 2,
      "index": np.arange(64, dtype=np.int64)})
  settings = dict(steps=4, batch_size=16, steps_per_loop=1, log_every=1, checkpoint_every=1)
  settings.update(overrides)
  return trainer.train(
      model_fn=lambda: models.build_model("mlp", 2, (4, 4, 1), widths=(8,), seed=0),
      train_input=lambda start: data.make_input_fn(source, global_batch_size=16,
                                                   training=True, start_step=start,
                                                   batch_ops=[ops.normalize()]),
      config=trainer.TrainConfig(**settings), strategy=tf.distribute.get_strategy(),
      model_dir=str(tmp_path), hooks=hooks)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  _tiny_train(tmp_path, steps=2)
  with pytest.raises(trainer.TrainingDiverged,
                     match=r"at step \d+ \(learning rate 1e\+30\).*; rerun with a lower "
                           r"learning rate to continue from it$"):
    _tiny_train(tmp_path, steps=50, learning_rate=1e30)
  latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
  reader = tf.train.load_checkpoint(latest)
  for name in reader.get_variable_to_shape_map():
    value = reader.get_tensor(name)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
      assert np.all(np.isfinite(value)), name
  event, = divergence.events(str(tmp_path))
  assert event["learning_rate"] == 1e30 and event["step"] > event["checkpoint_step"]
  # Steps whose loss and weights stay finite count as good, whatever their rate.
  assert event["checkpoint_step"] == checkpoints.step_of(latest) >= 2


def test_a_diverged_run_continues_only_at_a_lower_rate(tmp_path):
  diverged, reference = tmp_path / "diverged", tmp_path / "reference"
  for folder in (diverged, reference):
    _tiny_train(folder, steps=2, deterministic=True)
  # Checkpoints every 2 steps: the step-2 one, trained at 0.01, is the last before the
  # loss at 1e30 turns NaN (steps at 1e30 that stay finite blow the weights up).
  with pytest.raises(trainer.TrainingDiverged):
    _tiny_train(diverged, steps=8, learning_rate=1e30, deterministic=True, checkpoint_every=2)
  good = divergence.pending(str(diverged))["checkpoint_step"]
  assert good == 2
  for rate in (1e30, 1e31):  # The rate it diverged at, or a higher one, would again.
    with pytest.raises(ConfigError, match=rf"^learning_rate={re.escape(f'{rate:g}')}: .*diverged "
                                          rf"at step \d+ .*continue from its checkpoint at step "
                                          rf"{good}, or"):
      _tiny_train(diverged, steps=8, learning_rate=rate, deterministic=True)
  model, record = _tiny_train(diverged, steps=8, learning_rate=0.001, deterministic=True)
  # Continuing is resuming the last good checkpoint at the new rate: the same weights as
  # a run that never diverged, resumed at 0.001.
  expected, _ = _tiny_train(reference, steps=8, learning_rate=0.001, deterministic=True)
  assert trainer.weights_digest(model) == trainer.weights_digest(expected)
  event, = record["divergences"]
  assert (event["continued_learning_rate"], event["continued_from_step"]) == (0.001, good)
  history = [json.loads(line) for line in (diverged / trainer.HISTORY).read_text().splitlines()]
  assert [r["step"] for r in history] == list(range(1, 9))
  assert [r["learning_rate"] for r in history][good:] == pytest.approx([0.001] * (8 - good))
  assert divergence.pending(str(diverged)) is None


def test_checkpoint_of_another_model_is_refused(tmp_path):
  _tiny_train(tmp_path, steps=1)
  with pytest.raises(ValueError, match=r"holds a checkpoint of another model .*; use a new "
                                       r"model_dir or delete it$"):
    trainer.train(
        model_fn=lambda: models.build_model("mlp", 2, (4, 4, 1), widths=(5, 5), seed=0),
        train_input=lambda start: None, config=trainer.TrainConfig(steps=4, batch_size=16),
        strategy=tf.distribute.get_strategy(), model_dir=str(tmp_path))


@pytest.mark.parametrize("call, message", [
    (lambda: strategy_lib.make_strategy("gpu_farm"), "name='gpu_farm' is not one of"),
    (lambda: strategy_lib.make_strategy("tpu"), "name='tpu' needs tpu="),
    (lambda: strategy_lib.make_strategy("tpu", tpu="grpc://127.0.0.1:1"),
     "tpu='grpc://127.0.0.1:1': could not reach the TPU"),
    (lambda: trainer.TrainConfig(optimizer="lbfgs").validate(), "optimizer='lbfgs' is not one"),
    (lambda: trainer.TrainConfig(schedule="linear").validate(), "schedule='linear' is not one"),
    (lambda: trainer.TrainConfig(precision="fp8").validate(), "precision='fp8' is not one"),
    (lambda: trainer.TrainConfig(steps=0).validate(), "steps=0 must be >= 1"),
    (lambda: trainer.train(model_fn=None, train_input=None,
                           config=trainer.TrainConfig(batch_size=30),
                           strategy=types.SimpleNamespace(num_replicas_in_sync=4),
                           model_dir="unused"),
     r"batch_size=30 must be a multiple of the number of replicas \(4\); use e.g. "
     r"batch_size=28$"),
])
def test_bad_configuration(call, message):
  with pytest.raises(ValueError, match=message):
    call()


@pytest.mark.parametrize("precision, compute", [("mixed_float16", "float16"),
                                                ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision_trains_with_float32_weights(tmp_path, precision, compute):
  model, record = _tiny_train(tmp_path, precision=precision, steps=4)
  assert np.isfinite(record["loss"]) and record["step"] == 4
  dense = models.weight_layers(model)[0]
  assert dense.compute_dtype == compute and dense.kernel.dtype == "float32"
  assert keras.mixed_precision.global_policy().name == "float32"  # Restored after.


class _StepHook:
  """Records the step it is called at, under a name of its own."""

  def __init__(self, name):
    self.name = name

  def __call__(self, step, model):
    del model
    return {"step_seen": step}


def _scalar_tags(folder):
  tags = set()
  for path in tf.io.gfile.glob(os.path.join(folder, "*")):
    for raw in tf.data.TFRecordDataset(path):
      tags.update(v.tag for v in tf.compat.v1.Event.FromString(raw.numpy()).summary.value)
  return tags


def test_named_hooks_record_side_by_side(tmp_path):
  # The mlp's first layer sees the 4x4x1 images flattened: 16 inputs.
  track = [hooks_lib.AlignmentHook(np.eye(16)), _StepHook("probe")]
  _, record = _tiny_train(tmp_path, steps=2, hooks=track)
  history = [json.loads(line) for line in open(tmp_path / trainer.HISTORY)]
  assert [r["probe/step_seen"] for r in history] == [1, 2]
  for r in history:
    assert len(r["alignment/transfer_function"]) == 16
    assert np.isfinite(r["alignment/misalignment"])
    assert np.isfinite(r["alignment/misalignment_random_basis"])
    assert 0 <= r["alignment/subspace_overlap"] <= 1 + 1e-12
    assert r["alignment/subspace_overlap_random"] == alignment.SUBSPACE_K / 16
    assert not {"step_seen", "misalignment", "transfer_function"} & r.keys()
  assert record == history[-1]
  tags = _scalar_tags(tmp_path / "tensorboard")
  assert {"probe/step_seen", "alignment/misalignment", "alignment/subspace_overlap",
          "loss"} <= tags
  assert "alignment/transfer_function" not in tags  # A list is no scalar.


def test_alignment_hook_records_the_subspace_overlap_of_its_k():
  model = models.build_model("mlp", 2, (4, 4, 1), widths=(8,), seed=0)
  sigma_x = np.diag(np.linspace(2.0, 0.1, 16))
  record = hooks_lib.AlignmentHook(sigma_x, subspace_k=3)(0, model)
  sigma_w = alignment.filter_covariance(models.weight_layers(model)[0].kernel.numpy())
  assert record["subspace_overlap"] == alignment.subspace_overlap(sigma_x, sigma_w, 3)
  assert record["subspace_overlap_random"] == 3 / 16
  with pytest.raises(ValueError, match=r"k must be in \[1, 16\], got 17"):
    hooks_lib.AlignmentHook(sigma_x, subspace_k=17)


def test_hooks_of_one_name_are_refused(tmp_path):
  with pytest.raises(ValueError, match="two hooks are named 'probe'"):
    _tiny_train(tmp_path, hooks=[_StepHook("probe"), _StepHook("alignment"),
                                 _StepHook("probe")])
  assert not os.path.exists(tmp_path / trainer.HISTORY)


class _Messages(logging.Handler):
  def __init__(self):
    super().__init__()
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture
def tensorflow_warnings():
  handler, logger = _Messages(), logging.getLogger("tensorflow")
  logger.addHandler(handler)
  yield handler.messages
  logger.removeHandler(handler)


def test_many_runs_in_one_process_do_not_warn_of_retracing(tmp_path, tensorflow_warnings):
  for run in range(7):  # TensorFlow's detector warns from the fifth trace of one code.
    _tiny_train(tmp_path / str(run), steps=2)
  assert not [m for m in tensorflow_warnings if "retracing" in m]


def test_a_step_function_that_really_retraces_still_warns(tensorflow_warnings):
  square = trainer._function(lambda x: x * x)  # pylint: disable=protected-access
  for size in range(1, 8):
    square(tf.zeros([size]))
  assert [m for m in tensorflow_warnings if "retracing" in m]


def test_bfloat16_follows_the_float32_accuracy_curve(tmp_path):
  """What `--precision=auto` picks on bf16 hardware changes no conclusion at small scale:
  over 40 steps the accuracy curve stays within 0.05 of float32's at every log step and
  the final loss within 1% (measured: 0.0125 and 0.02%; bfloat16 keeps 8 bits of
  mantissa, while logits, loss and master weights stay float32)."""
  curves = {}
  for precision in ("float32", "mixed_bfloat16"):
    _tiny_train(tmp_path / precision, precision=precision, steps=40, log_every=5,
                checkpoint_every=40, learning_rate=0.1, deterministic=True)
    history = [json.loads(line) for line in open(tmp_path / precision / trainer.HISTORY)]
    curves[precision] = np.array([(r["accuracy"], r["loss"]) for r in history])
  np.testing.assert_allclose(curves["mixed_bfloat16"][:, 0], curves["float32"][:, 0], atol=0.05)
  np.testing.assert_allclose(curves["mixed_bfloat16"][-1, 1], curves["float32"][-1, 1],
                             rtol=0.01)
  assert curves["float32"][-1, 0] > curves["float32"][0, 0] + 0.2  # It learned something.
