"""Benchmark: `patch_covariance` against a published reproduction's patch covariance.

The peer (the approach of a published reproduction of Maennel et al., 2020) extracts each
image's patches with scikit-learn's `extract_patches_2d` in a Python loop and takes
`np.cov` over all of them. Both run on the same seeded, fixed random 32x32x3 float32
images with 3x3 patches, stride 1. The peer holds every patch in memory (in float64 for
`np.cov`), so it runs on a subset; patches per second is comparable across sizes.
After one untimed call each (tracing), the two alternate over --rounds rounds, the order
reversed every other round (`rounds.alternate`); median times give patches per second.

Run: .venv/bin/python bench/patch_covariance.py   (needs scikit-learn for the peer:
.venv/bin/pip install scikit-learn). The last line is `patch_covariance_vs_sklearn=<ratio>`,
the ratio of patches per second at the median times.
"""
import argparse
import sys
import time

import numpy as np

from tfrandlabels.analysis import alignment

import rounds

try:
  from sklearn.feature_extraction.image import extract_patches_2d
except ImportError:
  extract_patches_2d = None

PATCH_SIZE = 3


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_images", type=int, default=10_000,
                      help="images for patch_covariance")
  parser.add_argument("--peer_images", type=int, default=2_000,
                      help="images for the peer, the first of the same set, to bound its "
                           "memory")
  parser.add_argument("--rounds", type=int, default=3,
                      help="timed rounds, one run of each method per round; medians count")
  return parser.parse_args()


def sklearn_patch_covariance(images):
  """The peer: per-image patch extraction in a Python loop, then np.cov over all."""
  patches = [extract_patches_2d(image, (PATCH_SIZE, PATCH_SIZE)) for image in images]
  patches = np.concatenate(patches).reshape(-1, PATCH_SIZE * PATCH_SIZE * images.shape[-1])
  return np.cov(patches, rowvar=False)


def num_patches(images):
  _, height, width, _ = images.shape
  return len(images) * (height - PATCH_SIZE + 1) * (width - PATCH_SIZE + 1)


def main():
  args = parse_args()
  if extract_patches_2d is None:
    print("scikit-learn is not installed; it runs the peer. Install it with "
          "`.venv/bin/pip install scikit-learn` and run this again.")
    sys.exit(1)

  images = np.random.default_rng(0).random((args.num_images, 32, 32, 3), dtype=np.float32)
  peer_images = images[:args.peer_images]
  print(f"images: {args.num_images} x 32x32x3 float32 (numpy seed 0), "
        f"{PATCH_SIZE}x{PATCH_SIZE} patches, stride 1")

  start = time.perf_counter()
  alignment.patch_covariance(images, PATCH_SIZE)
  print(f"patch_covariance first call (includes tracing): "
        f"{time.perf_counter() - start:.2f} s")
  peer_cov = sklearn_patch_covariance(peer_images)
  _, ours_on_peer_images = alignment.patch_covariance(peer_images, PATCH_SIZE)
  print(f"max |covariance difference| on the first {args.peer_images} images: "
        f"{np.max(np.abs(ours_on_peer_images - peer_cov)):.3g} "
        f"(max |covariance| {np.max(np.abs(peer_cov)):.3g})")

  patches = {"patch_covariance": num_patches(images), "sklearn": num_patches(peer_images)}
  seconds = rounds.alternate({
      "patch_covariance": rounds.timed(lambda: alignment.patch_covariance(images, PATCH_SIZE)),
      "sklearn": rounds.timed(lambda: sklearn_patch_covariance(peer_images))}, args.rounds)
  rates = {name: patches[name] / median for name, median in rounds.medians(seconds).items()}
  rounds.report(seconds, digits=3, suffix=lambda name: (
      f", {patches[name]} patches: {rates[name]:.3g} patches/s"))
  print(f"patch_covariance_vs_sklearn={rates['patch_covariance'] / rates['sklearn']:.1f}")


if __name__ == "__main__":
  main()
