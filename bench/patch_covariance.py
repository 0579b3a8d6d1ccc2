"""Benchmark: `patch_covariance` against a published reproduction's patch covariance.

The peer (the approach of a published reproduction of Maennel et al., 2020) extracts each
image's patches with scikit-learn's `extract_patches_2d` in a Python loop and takes
`np.cov` over all of them. Both run on the same seeded, fixed random 32x32x3 float32
images with 3x3 patches, stride 1. The peer holds every patch in memory (in float64 for
`np.cov`), so it runs on a subset; patches per second is comparable across sizes.

Run: .venv/bin/python bench/patch_covariance.py   (needs scikit-learn for the peer:
.venv/bin/pip install scikit-learn). The last line is `patch_covariance_vs_sklearn=<ratio>`,
the ratio of patches per second.
"""
import argparse
import sys
import time

import numpy as np

from tfrandlabels.analysis import alignment

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
  parser.add_argument("--repeats", type=int, default=3,
                      help="timed runs of each method; the fastest counts")
  return parser.parse_args()


def sklearn_patch_covariance(images):
  """The peer: per-image patch extraction in a Python loop, then np.cov over all."""
  patches = [extract_patches_2d(image, (PATCH_SIZE, PATCH_SIZE)) for image in images]
  patches = np.concatenate(patches).reshape(-1, PATCH_SIZE * PATCH_SIZE * images.shape[-1])
  return np.cov(patches, rowvar=False)


def fastest_of(repeats, run):
  """Seconds of the fastest of `repeats` calls of `run`."""
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    seconds.append(time.perf_counter() - start)
  return min(seconds)


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
  seconds = fastest_of(args.repeats, lambda: alignment.patch_covariance(images, PATCH_SIZE))
  ours_rate = num_patches(images) / seconds
  print(f"patch_covariance: {num_patches(images)} patches of {args.num_images} images in "
        f"{seconds:.3f} s (fastest of {args.repeats}): {ours_rate:.3g} patches/s")

  peer_cov = sklearn_patch_covariance(peer_images)
  seconds = fastest_of(args.repeats, lambda: sklearn_patch_covariance(peer_images))
  peer_rate = num_patches(peer_images) / seconds
  print(f"sklearn extract_patches_2d loop + np.cov (peer, on the first {args.peer_images} "
        f"images to bound its memory): {num_patches(peer_images)} patches in {seconds:.3f} s "
        f"(fastest of {args.repeats}): {peer_rate:.3g} patches/s")
  _, ours_on_peer_images = alignment.patch_covariance(peer_images, PATCH_SIZE)
  print(f"max |covariance difference| on those {args.peer_images} images: "
        f"{np.max(np.abs(ours_on_peer_images - peer_cov)):.3g} "
        f"(max |covariance| {np.max(np.abs(peer_cov)):.3g})")
  print(f"patch_covariance_vs_sklearn={ours_rate / peer_rate:.1f}")


if __name__ == "__main__":
  main()
