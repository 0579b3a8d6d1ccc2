"""Input pipelines for `strategy.distribute_datasets_from_function`.

The training stream is a pure function of (data, seed, step): epoch e is the cached
shard shuffled with a seed derived from (seed, e), augmented with stateless ops keyed
on (seed, epoch, index), and a run resumed at `start_step` starts exactly where the
interrupted run stopped (same order, same augmentations) by skipping into the epoch.
Batches are dicts {"image": float32 [b, H, W, C], "label": int64 [b], "index": int64 [b]}.
"""
import numpy as np
import tensorflow as tf

from tfrandlabels.data import frequency

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


def make_preprocess(*, mean=None, std=None, image_size=None):
  """Returns fn(uint8 image) -> float32 image: resized if asked, then normalized.

  With `mean` and `std` (per channel, in uint8 units) images are standardized;
  otherwise they are scaled to [0, 1].
  """
  if (mean is None) != (std is None):
    raise ValueError("mean and std must be given together (per-channel, uint8 units)")
  shift = np.zeros(1, np.float32) if mean is None else np.asarray(mean, np.float32)
  scale = np.full(1, 255.0, np.float32) if std is None else np.asarray(std, np.float32)
  if np.any(scale <= 0):
    raise ValueError(f"std={std!r} must be positive")

  def preprocess(image):
    image = tf.cast(image, tf.float32)
    if image_size is not None:
      image = tf.image.resize(image, image_size)
    return (image - shift) / scale

  return preprocess


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
                  augment=False, mean=None, std=None, image_size=None,
                  frequency_mask=None, cache=True, shuffle_buffer=None,
                  drop_remainder=None):
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
    mean, std: per-channel standardization (uint8 units); default scales to [0, 1].
    image_size: (H, W) to resize to, for sources whose images vary in size.
    frequency_mask: optional centred [H, W] mask applied to every batch.
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
  preprocess = make_preprocess(mean=mean, std=std, image_size=image_size)

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
    def preprocess_images(e):
      return {**e, "image": preprocess(e["image"])}

    # Resizing needs single images (sizes may vary); otherwise preprocess whole
    # batches, which is several times faster than one example at a time.
    if image_size is not None:
      ds = ds.map(preprocess_images, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=drop_remainder)
    if image_size is None:
      ds = ds.map(preprocess_images, num_parallel_calls=tf.data.AUTOTUNE)
    if frequency_mask is not None:
      mask = tf.constant(frequency_mask, tf.float32)
      ds = ds.map(lambda b: {**b, "image": frequency.apply_mask(b["image"], mask)},
                  num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)

  return input_fn
