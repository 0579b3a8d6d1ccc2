"""Benchmark: input pipeline throughput, and in-graph frequency filtering against numpy.

Four pipelines over the `embedded` train split (6,000 32x32x3 images), read once into
memory so that image decoding does not dominate:
  1. `make_input_fn` with `ops.normalize()`: uint8 -> float32 in [0, 1], batches of 256;
  2. the same with `corrupt_labels(fraction=1.0, mode="uniform")` in its `dataset_fn`;
  3. the same with the batch op `frequency_filter('low_pass:8')`: `frequency.apply_mask` on each batch;
  4. the peer: the same filter as reference (PyTorch) implementations do it, a numpy FFT
     per image and channel in a Python loop (fft2, multiply by the unshifted mask,
     ifft2, real part), then batches of 256 collated with np.stack, labels precomputed.
Each runs a warm-up epoch (tracing, filling the cache); then every round times one epoch
of each, the order reversed every other round (`rounds.alternate`), so a load change on
the shared machine hits all of them; the median epoch gives its images per second.

Run: .venv/bin/python bench/input_pipeline.py [--data_dir DIR]. The last line is
`filter_vs_numpy=<rate 3 / rate 4> corruption_overhead=<100 * (1 - rate 2 / rate 1)>%`.
"""
import argparse

import numpy as np
import tensorflow as tf

from tfrandlabels import data
from tfrandlabels.data import frequency
from tfrandlabels.data import ops

import rounds

NUM_CLASSES = 10
CUTOFF = 8  # Low-pass radius, cycles per image.


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data_dir holding (or to prepare) `embedded`; default TFDS's")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--rounds", type=int, default=10,
                      help="timed rounds, one epoch of each pipeline per round")
  return parser.parse_args()


def read_into_memory(data_dir):
  """The `embedded` train split as numpy arrays: decoded once, shared by every pipeline."""
  examples = list(data.load("embedded", "train", data_dir=data_dir).as_numpy_iterator())
  return {key: np.stack([e[key] for e in examples]) for key in ("image", "label", "index")}


def tf_epoch(dataset):
  """One full pass over a tf.data pipeline, as a training loop's iterator would take it."""
  def run_epoch():
    for _ in dataset:
      pass
  return run_epoch


def numpy_filter(image, unshifted_mask):
  """The peer's per-image filter: a complex FFT per channel, masked, inverted, real part."""
  return np.stack([np.real(np.fft.ifft2(np.fft.fft2(image[..., c]) * unshifted_mask))
                   for c in range(image.shape[-1])], axis=-1).astype(np.float32)


def numpy_batches(arrays, labels, centred_mask, batch_size):
  """The peer's loader: per-example __getitem__ (scale, filter), collated into batches."""
  unshifted_mask = np.fft.ifftshift(centred_mask)
  for start in range(0, len(labels), batch_size):
    stop = min(start + batch_size, len(labels))
    images = [numpy_filter(arrays["image"][i].astype(np.float32) / 255.0, unshifted_mask)
              for i in range(start, stop)]
    yield {"image": np.stack(images), "label": labels[start:stop],
           "index": arrays["index"][start:stop]}


def numpy_epoch(arrays, labels, centred_mask, batch_size):
  def run_epoch():
    for _ in numpy_batches(arrays, labels, centred_mask, batch_size):
      pass
  return run_epoch


def main():
  args = parse_args()
  arrays = read_into_memory(args.data_dir)
  count = len(arrays["label"])
  height, width = arrays["image"].shape[1:3]
  mask = frequency.low_pass((height, width), CUTOFF)
  print(f"embedded train: {count} images {arrays['image'].shape[1:]} uint8, in memory; "
        f"batch {args.batch_size}; {args.rounds} timed epochs each after 1 warm-up; "
        f"low_pass radius {CUTOFF}")

  def source():
    return tf.data.Dataset.from_tensor_slices(arrays)

  def corrupted():
    return data.corrupt_labels(source(), fraction=1.0, num_classes=NUM_CLASSES, seed=0,
                               mode="uniform")

  unit = [ops.normalize()]
  pipelines = {
      "1 decode+batch": data.make_input_fn(
          source, global_batch_size=args.batch_size, training=False, batch_ops=unit)(),
      "2 + corrupt_labels": data.make_input_fn(
          corrupted, global_batch_size=args.batch_size, training=False, batch_ops=unit)(),
      "3 + apply_mask (in-graph, per batch)": data.make_input_fn(
          corrupted, global_batch_size=args.batch_size, training=False,
          batch_ops=unit + [ops.frequency_filter(f"low_pass:{CUTOFF}")])(),
  }
  epochs = {name: tf_epoch(ds) for name, ds in pipelines.items()}
  # The peer's labels are drawn once up front, as a reference implementation stores them.
  peer_labels = np.random.default_rng(0).integers(0, NUM_CLASSES, count)
  epochs["4 numpy FFT per image (peer)"] = numpy_epoch(arrays, peer_labels, mask,
                                                       args.batch_size)

  # The warm-up epoch traces, and fills the cache of the tf.data pipelines.
  seconds = rounds.alternate({name: rounds.timed(run) for name, run in epochs.items()},
                             args.rounds, warmup=True)
  rates = {name: count / median for name, median in rounds.medians(seconds).items()}
  rounds.report(seconds, digits=3, suffix=lambda name: f", {rates[name]:,.0f} images/s")

  ours = next(iter(pipelines["3 + apply_mask (in-graph, per batch)"]))["image"].numpy()
  peer = next(numpy_batches(arrays, peer_labels, mask, args.batch_size))["image"]
  print(f"max |in-graph - numpy| on the first batch: {np.max(np.abs(ours - peer)):.2g} "
        f"(pixel values in [0, 1])")

  rate_1, rate_2, rate_3, rate_4 = rates.values()
  print(f"ratios: filtering costs {100 * (1 - rate_3 / rate_2):.1f}% of path 2's rate; "
        f"in-graph vs numpy {rate_3 / rate_4:.1f}x")
  print(f"filter_vs_numpy={rate_3 / rate_4:.1f} corruption_overhead={100 * (1 - rate_2 / rate_1):.1f}%")


if __name__ == "__main__":
  main()
