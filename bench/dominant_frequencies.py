"""Benchmark: the batched dominant-frequency search against the reference code's loop.

The reference code of Wang et al. (nis-research/nn-frequency-shortcuts) scores one
frequency at a time: FFT of the class's images, remove the frequency, inverse FFT,
one forward pass, for every frequency of every class. The `dominant_frequencies`
analysis (`spectra.class_frequency_importance` on the model split by
`split_first_convolution`) takes one FFT of the images, removes each frequency by
subtracting its sinusoid after the first convolution (run on 2C patterns per
frequency, not on every image), and scores many frequencies of all classes per
forward pass. Both run here on the same images (the first `--images` test images of
each class of a planted-band set, standardized) and the same model (`strided_cnn`,
seeded; its weights do not change the work), and score the same frequencies: each
conjugate pair once (the loop skips a frequency whose partner it already scored, the
reference's conjugate bug fixed). Rounds alternate which method goes first
(`rounds.alternate`); each round times the search over every class.

Run: .venv/bin/python bench/dominant_frequencies.py [--images=32 --rounds=3]
The last line is `dfm_vs_loop=<ratio>`: median loop time over median batched time.
"""
import argparse

import keras
import numpy as np
import tensorflow as tf

from tfrandlabels import models
from tfrandlabels.analyses import dominant_frequencies
from tfrandlabels.analysis import spectra
from tfrandlabels.data import planted

import rounds


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", default="planted_high",
                      help="planted_low, planted_mid or planted_high")
  parser.add_argument("--images", type=int, default=32, help="images per class")
  parser.add_argument("--batch", type=int, default=1024,
                      help="images per forward pass of the batched search")
  parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each method")
  return parser.parse_args()


def class_images(name, per_class):
  """The first `per_class` test images of each class, standardized, float32."""
  images, labels = planted.generate_images(name, "test")
  images = images.astype(np.float32)
  images = (images - images.mean(axis=(0, 1, 2))) / images.std(axis=(0, 1, 2))
  return [images[labels == c][:per_class] for c in range(planted.NUM_CLASSES)]


def mean_loss(predict, images, label):
  logits = predict(images)
  labels = tf.fill([len(images)], label)
  return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)))


def loop_importance(predict, images, label):
  """The reference approach: per frequency, FFT, removal, inverse FFT, forward pass."""
  height, width = images.shape[1:3]
  intact = mean_loss(predict, images, label)
  importance = np.full((height, width), np.nan)
  for row in range(height):
    for col in range(width):
      if not np.isnan(importance[row, col]):
        continue  # Scored with its conjugate partner.
      mask = np.fft.ifftshift(spectra.removal_masks(height, width, [[row, col]])[0])
      spectrum = np.fft.fft2(images, axes=(1, 2)) * mask[None, :, :, None]
      removed = np.real(np.fft.ifft2(spectrum, axes=(1, 2))).astype(np.float32)
      partner = spectra.conjugate_positions(height, width, row, col)
      importance[row, col] = importance[partner] = mean_loss(predict, removed, label) - intact
  return importance


def batched_search(model, per_class, batch):
  """The analysis's search: every class at once, after the first convolution."""
  stem, head = dominant_frequencies.split_first_convolution(model)
  images = np.concatenate(per_class)
  labels = np.repeat(np.arange(len(per_class)), [len(x) for x in per_class])
  return list(spectra.class_frequency_importance(head, images, labels, len(per_class),
                                                 chunk=max(1, batch // len(images)),
                                                 stem=stem))


def loop_search(predict, per_class):
  return [loop_importance(predict, images, label) for label, images in enumerate(per_class)]


def search(method, found):
  """A contender for `rounds.alternate`: () -> seconds to score every frequency of every
  class; the scores are left in the list `found`."""
  def run():
    found[:] = method()
  return rounds.timed(run)


def main():
  args = parse_args()
  per_class = class_images(args.dataset, args.images)
  keras.utils.set_random_seed(0)
  model = models.build_model("strided_cnn", planted.NUM_CLASSES, per_class[0].shape[1:],
                             seed=0)
  predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
  methods = {"batched": lambda: batched_search(model, per_class, args.batch),
             "loop": lambda: loop_search(predict, per_class)}
  print(f"{args.dataset}: {planted.NUM_CLASSES} classes x {args.images} test images, "
        f"32x32x3; strided_cnn; every frequency pair scored; batched: up to {args.batch} "
        "images per forward pass")
  # Warm up: trace (and compile) every function for the shapes both methods use.
  batched_search(model, per_class, args.batch)
  loop_importance(predict, per_class[0], 0)
  scores = {name: [] for name in methods}
  times = rounds.alternate({name: search(method, scores[name])
                            for name, method in methods.items()}, args.rounds)
  difference = max(np.nanmax(np.abs(a - b)) for a, b in zip(scores["batched"], scores["loop"]))
  same = np.mean([np.array_equal(spectra.dominant_frequency_map(a),
                                 spectra.dominant_frequency_map(b))
                  for a, b in zip(scores["batched"], scores["loop"])])
  print(f"largest score difference {difference:.2e}; identical 5% DFMs for {same:.0%} of "
        "the classes")
  rounds.report(times, suffix=lambda _: ", all classes")
  median = rounds.medians(times)
  print(f"dfm_vs_loop={median['loop'] / median['batched']:.1f}")


if __name__ == "__main__":
  main()
