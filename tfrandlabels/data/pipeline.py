"""Input pipelines for `strategy.distribute_datasets_from_function`.

The training stream is a pure function of (data, seed, step): epoch e is the cached
shard shuffled with a seed derived from (seed, e), augmented with stateless ops keyed
on (seed, epoch, index), and a run resumed at `start_step` starts exactly where the
interrupted run stopped (same order, same augmentations) by skipping into the epoch.
Batches are dicts {"image": [b, H, W, C], "label": int64 [b], "index": int64 [b]}; the
batch ops (`tfrandlabels.data.ops`) turn uint8 images into the model's float inputs.
"""
import tensorflow as tf


PAD = 4  # Random-crop padding, in pixels, as in the usual CIFAR augmentation.


def per_replica_batch_size(global_batch_size, num_replicas):
  """Splits the global batch evenly over replicas, or explains why it cannot."""
  if global_batch_size < 1 or global_batch_size % num_replicas:
    raise ValueError(f"batch_size={global_batch_size} must be a positive multiple of the "
                     f"number of replicas ({num_replicas}); choose e.g. "
                     f"{max(1, global_batch_size // num_replicas) * num_replicas}")
  return global_batch_size // num_replicas


def _augment(image, seed):
  """Pads by PAD pixels (reflect), crops back at a random offset, flips half the time."""
  shape = tf.shape(image)
  padded = tf.pad(image, [[PAD, PAD], [PAD, PAD], [0, 0]], mode="REFLECT")
  image = tf.image.stateless_random_crop(padded, shape, seed=seed)
  return tf.image.stateless_random_flip_left_right(image, seed=seed + 1)


def _resize(image_size):
  def resize(example):
    return {**example, "image": tf.image.resize(tf.cast(example["image"], tf.float32),
                                                image_size)}
  return resize


def _stateless_shuffle(ds, block, seed):
  """Shuffles ds in blocks of `block` examples, each permuted by a stateless op.

  With block >= len(ds) this is a full uniform shuffle (the memory of a full shuffle
  buffer). Unlike `Dataset.shuffle`, the order is a pure function of a seed *tensor*,
  so epoch e's order can be rebuilt directly when a run resumes.
  """
  def permute(i, examples):
    count = tf.shape(examples["index"])[0]
    order = tf.random.experimental.stateless_shuffle(
        tf.range(count), seed=tf.random.experimental.stateless_fold_in(seed, i))
    return {key: tf.gather(value, order) for key, value in examples.items()}

  return ds.batch(block).enumerate().map(permute).unbatch()


def _count(ds):
  count = ds.cardinality()
  if count >= 0:
    return int(count)
  return int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def make_input_fn(dataset_fn, *, global_batch_size, training, seed=0, start_step=0,
                  augment=False, image_size=None, batch_ops=(), cache=True,
                  shuffle_buffer=None, drop_remainder=None):
  """Builds `fn(input_context)` for `strategy.distribute_datasets_from_function`.

  Args:
    dataset_fn: callable returning the source dataset of dicts with uint8 `image`,
      int64 `label` and `index` (e.g. load + corrupt_labels).
    global_batch_size: examples per step over all replicas.
    training: shuffle and repeat forever (True) or one ordered pass (False).
    seed: shuffling and augmentation seed.
    start_step: steps already taken; training resumes at exactly this position.
    augment: random crop (reflect-pad 4) and horizontal flip; off by default, as the
      papers train without augmentation.
    image_size: (H, W) to resize to (per example, before batching; float32 in uint8
      units), for sources whose images vary in size.
    batch_ops: functions batch -> batch applied in order after batching (see
      `tfrandlabels.data.ops`: normalization, input corruption, frequency filters).
      With none, images stay as the source yields them.
    cache: keep the decoded shard in memory after the first pass.
    shuffle_buffer: shuffle block size; default the whole shard (a full shuffle).
    drop_remainder: defaults to `training`; True gives static shapes (TPU).

  Returns:
    fn(input_context=None) -> tf.data.Dataset of per-replica batches.
  """
  if drop_remainder is None:
    drop_remainder = training
  if start_step < 0:
    raise ValueError(f"start_step={start_step} must be >= 0")
  batch_ops = list(batch_ops)

  def input_fn(input_context=None):
    context = input_context or tf.distribute.InputContext()
    batch = per_replica_batch_size(global_batch_size, context.num_replicas_in_sync)
    ds = dataset_fn().shard(context.num_input_pipelines, context.input_pipeline_id)
    ds = ds.map(lambda e: {"image": e["image"], "label": e["label"], "index": e["index"]})
    if cache:
      ds = ds.cache()
    if training:
      size = _count(ds)
      if size < batch:
        raise ValueError(f"batch_size: the shard holds {size} examples, fewer than one "
                         f"per-replica batch of {batch}")
      # Examples this pipeline has already served: its replicas' share of each step.
      replicas = context.num_replicas_in_sync // context.num_input_pipelines
      consumed = start_step * batch * replicas
      first_epoch, offset = divmod(consumed, size)

      def epoch(e):
        epoch_seed = tf.stack([tf.cast(seed, tf.int64), e])
        order = _stateless_shuffle(ds, shuffle_buffer or size, epoch_seed)
        if not augment:
          return order
        return order.map(lambda x: {**x, "image": _augment(
            x["image"], tf.stack([epoch_seed[0] * 1_000_003 + e, x["index"]]))})

      ds = tf.data.Dataset.range(first_epoch, tf.int64.max).flat_map(epoch).skip(offset)
    if image_size is not None:
      ds = ds.map(_resize(image_size), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=drop_remainder)
    for op in batch_ops:
      ds = ds.map(op, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)

  return input_fn
