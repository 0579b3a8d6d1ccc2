"""Input pipeline: batching, epochs, exact resume, sharding, preprocessing, filtering."""
import types

import numpy as np
import pytest
import tensorflow as tf

from tfrandlabels import data
from tfrandlabels.data import ops
from tfrandlabels.experiments import common
from tfrandlabels.pipeline.context import Context

N = 50


def _source():
  rng = np.random.default_rng(0)
  return tf.data.Dataset.from_tensor_slices({
      "image": rng.integers(0, 256, (N, 8, 8, 3), dtype=np.uint8),
      "label": np.arange(N, dtype=np.int64) % 5, "index": np.arange(N, dtype=np.int64)})


def _batches(input_fn, count, context=None):
  return list(input_fn(context).take(count).as_numpy_iterator())


def test_training_stream_covers_each_epoch_once():
  fn = data.make_input_fn(_source, global_batch_size=10, training=True, seed=1)
  batches = _batches(fn, 10)
  assert all(b["image"].shape == (10, 8, 8, 3) and b["image"].dtype == np.uint8
             for b in batches)
  first, second = (np.concatenate([b["index"] for b in batches[i:i + 5]]) for i in (0, 5))
  assert sorted(first) == list(range(N)) and sorted(second) == list(range(N))
  assert list(first) != list(second)  # Each epoch is reshuffled.
  assert list(first) != list(range(N))


@pytest.mark.parametrize("augment", [False, True])
def test_resume_continues_exactly(augment):
  kwargs = dict(global_batch_size=8, training=True, seed=3, augment=augment)
  full = _batches(data.make_input_fn(_source, **kwargs), 12)
  resumed = _batches(data.make_input_fn(_source, start_step=7, **kwargs), 5)
  for a, b in zip(full[7:], resumed):
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["image"], b["image"])


def test_augmentation_crops_and_flips_deterministically():
  plain = _batches(data.make_input_fn(_source, global_batch_size=N, training=True, seed=0), 1)
  aug = _batches(data.make_input_fn(_source, global_batch_size=N, training=True, seed=0,
                                    augment=True), 1)
  np.testing.assert_array_equal(plain[0]["index"], aug[0]["index"])
  changed = [not np.array_equal(a, b) for a, b in zip(plain[0]["image"], aug[0]["image"])]
  assert 0.5 < np.mean(changed) <= 1.0


def test_input_pipelines_shard_the_data():
  seen = []
  for pipeline in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                         num_replicas_in_sync=2)
    fn = data.make_input_fn(_source, global_batch_size=10, training=False)
    batches = _batches(fn, 100, context)
    assert batches[0]["image"].shape[0] == 5  # Per-replica batch.
    seen.append(np.concatenate([b["index"] for b in batches]))
  assert not set(seen[0]) & set(seen[1])
  assert sorted(np.concatenate(seen)) == list(range(N))


def test_evaluation_is_one_ordered_pass_with_normalization():
  mean, std = [10.0, 20.0, 30.0], [2.0, 4.0, 8.0]
  fn = data.make_input_fn(_source, global_batch_size=16, training=False,
                          batch_ops=[ops.normalize(mean, std)])
  batches = _batches(fn, 100)
  assert [len(b["index"]) for b in batches] == [16, 16, 16, 2]
  images = np.concatenate([b["image"] for b in batches])
  raw = np.stack([e["image"] for e in _source().as_numpy_iterator()]).astype(np.float32)
  np.testing.assert_allclose(images, (raw - mean) / std, rtol=1e-6)
  scaled = np.concatenate([b["image"] for b in _batches(data.make_input_fn(
      _source, global_batch_size=16, training=False, batch_ops=[ops.normalize()]), 100)])
  np.testing.assert_allclose(scaled, raw / 255.0, rtol=1e-6)


def _numpy_low_pass(images, radius):
  """Keeps the frequencies within `radius` of the centre: numpy.fft, image by image."""
  height, width = images.shape[1:3]
  rows, cols = np.meshgrid(np.arange(height) - height // 2, np.arange(width) - width // 2,
                           indexing="ij")
  mask = np.hypot(rows, cols) <= radius
  spectrum = np.fft.fftshift(np.fft.fft2(images, axes=(1, 2)), axes=(1, 2))
  kept = np.fft.ifftshift(spectrum * mask[None, :, :, None], axes=(1, 2))
  return np.real(np.fft.ifft2(kept, axes=(1, 2)))


def test_frequency_filter_op_matches_numpy():
  raw = np.stack([e["image"] for e in _source().take(10).as_numpy_iterator()])
  fn = data.make_input_fn(_source, global_batch_size=10, training=False,
                          batch_ops=[ops.normalize(), ops.frequency_filter("low_pass:2")])
  filtered = _batches(fn, 1)[0]["image"]
  np.testing.assert_allclose(filtered, _numpy_low_pass(raw / 255.0, 2), atol=1e-5)


def test_input_corruption_op_matches_the_dataset_corruption():
  corrupted = np.stack([e["image"] for e in data.corrupt_inputs(
      _source(), mode="random_pixels", fraction=0.5, seed=3).as_numpy_iterator()])
  fn = data.make_input_fn(_source, global_batch_size=N, training=False,
                          batch_ops=[ops.input_corruption("random_pixels:0.5", seed=3)])
  batch = _batches(fn, 1)[0]
  np.testing.assert_array_equal(batch["image"], corrupted)
  raw = np.stack([e["image"] for e in _source().as_numpy_iterator()])
  changed = np.mean([not np.array_equal(a, b) for a, b in zip(raw, batch["image"])])
  assert 0.25 < changed < 0.75


@pytest.mark.parametrize("text, message", [
    ("low_pass", "filter='low_pass' must be low_pass:R"),
    ("band_pass:12-4", "must be"),
    ("notch:3", "must be"),
])
def test_bad_filters(text, message):
  with pytest.raises(ValueError, match=message):
    ops.parse_filter(text)


@pytest.mark.parametrize("text", ["shuffled_pixels", "shuffled_pixels:2", "blur:0.5"])
def test_bad_corruptions(text):
  with pytest.raises(ValueError, match="must be MODE:FRACTION"):
    ops.parse_corruption(text)


def test_bad_batch_sizes():
  context = tf.distribute.InputContext(num_replicas_in_sync=4)
  with pytest.raises(ValueError, match="batch_size=10 must be a positive multiple of the "
                                       r"number of replicas \(4\)"):
    data.make_input_fn(_source, global_batch_size=10, training=True)(context)
  with pytest.raises(ValueError, match="fewer than one per-replica batch"):
    data.make_input_fn(_source, global_batch_size=64, training=True)()


@pytest.mark.parametrize("strategy, tpu, static", [("auto", None, False), ("tpu", None, True),
                                                   ("auto", "local", True)])
def test_evaluation_batches_are_static_on_tpu(strategy, tpu, static):
  """A TPU compiles for one batch shape: its evaluation drops the last partial batch."""
  cfg = types.SimpleNamespace(
      strategy=strategy, tpu=tpu, batch_size=16, image_size=None, augment=False,
      normalize="unit", input_corruption="", input_corruption_seed=0, train_filter="",
      eval_filter="", workdir="unused")
  ctx = Context(cfg, tf.distribute.get_strategy())
  for training in (True, False):
    ds = common.make_input(ctx, _source, training=training, stats_split="unused")(None)
    batch_dim = ds.element_spec["image"].shape[0]
    assert batch_dim == (16 if training or static else None)
    sizes = [len(b["label"]) for b in ds.take(4 if training else 10).as_numpy_iterator()]
    assert sizes == ([16] * 4 if training else [16] * 3 + ([] if static else [2]))
