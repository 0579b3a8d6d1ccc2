"""Input pipeline: batching, epochs, exact resume, sharding, preprocessing, filtering."""
import numpy as np
import pytest
import tensorflow as tf

from tfrandlabels import data
from tfrandlabels.data import frequency

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
  assert all(b["image"].shape == (10, 8, 8, 3) and b["image"].dtype == np.float32
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
  fn = data.make_input_fn(_source, global_batch_size=16, training=False, mean=mean, std=std)
  batches = _batches(fn, 100)
  assert [len(b["index"]) for b in batches] == [16, 16, 16, 2]
  images = np.concatenate([b["image"] for b in batches])
  raw = np.stack([e["image"] for e in _source().as_numpy_iterator()]).astype(np.float32)
  np.testing.assert_allclose(images, (raw - mean) / std, rtol=1e-6)
  scaled = np.concatenate([b["image"] for b in _batches(
      data.make_input_fn(_source, global_batch_size=16, training=False), 100)])
  np.testing.assert_allclose(scaled, raw / 255.0, rtol=1e-6)


def test_frequency_mask_is_applied_to_batches():
  mask = frequency.low_pass(8, 2)
  plain = _batches(data.make_input_fn(_source, global_batch_size=10, training=False), 1)[0]
  filtered = _batches(data.make_input_fn(_source, global_batch_size=10, training=False,
                                         frequency_mask=mask), 1)[0]
  np.testing.assert_allclose(filtered["image"], frequency.apply_mask(plain["image"], mask),
                             atol=1e-6)


def test_bad_batch_sizes():
  context = tf.distribute.InputContext(num_replicas_in_sync=4)
  with pytest.raises(ValueError, match="batch_size=10 must be a positive multiple of the "
                                       r"number of replicas \(4\)"):
    data.make_input_fn(_source, global_batch_size=10, training=True)(context)
  with pytest.raises(ValueError, match="fewer than one per-replica batch"):
    data.make_input_fn(_source, global_batch_size=64, training=True)()
