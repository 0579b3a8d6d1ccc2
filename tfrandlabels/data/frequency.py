"""Frequency filtering of image batches, in-graph with tf.signal (Wang et al., ICCV 2023).

Masks live in the centred (fftshift) layout: entry [H//2, W//2] is the zero frequency,
and the radius of entry [y, x] is sqrt((y - H//2)^2 + (x - W//2)^2) in cycles per image.
`apply_mask` keeps the spectrum's conjugate symmetry, so filtered images are real, and
filters whole batches [B, H, W, C] at once, each channel independently.
"""
import numpy as np
import tensorflow as tf

FILTERS = ("low_pass", "high_pass", "band_pass", "band_stop")


def _size(size):
  """Normalizes `size` (int or (H, W)) to a pair of positive ints."""
  pair = (size, size) if np.isscalar(size) else tuple(size)
  if len(pair) != 2 or any(int(s) != s or s < 1 for s in pair):
    raise ValueError(f"size={size!r} must be a positive int or a pair (height, width)")
  return int(pair[0]), int(pair[1])


def radius_grid(size):
  """Distance of each centred-layout frequency from the zero frequency, float32 [H, W]."""
  height, width = _size(size)
  y = np.arange(height) - height // 2
  x = np.arange(width) - width // 2
  return np.sqrt(y[:, None] ** 2 + x[None, :] ** 2).astype(np.float32)


def _check_radius(name, r):
  if r is None or not np.isfinite(r) or r < 0:
    raise ValueError(f"{name}={r!r} must be a finite number >= 0")


def radial_mask(size, r_min, r_max):
  """Binary mask (float32 [H, W], centred layout) of frequencies with r_min <= r <= r_max."""
  _check_radius("r_min", r_min)
  _check_radius("r_max", r_max)
  if r_max < r_min:
    raise ValueError(f"r_max={r_max!r} must be >= r_min={r_min!r}")
  radius = radius_grid(size)
  return ((radius >= r_min) & (radius <= r_max)).astype(np.float32)


def low_pass(size, r):
  """Mask keeping the frequencies with radius <= r."""
  _check_radius("r", r)
  return radial_mask(size, 0.0, r)


def high_pass(size, r):
  """Mask keeping the frequencies with radius > r: the complement of low_pass(size, r)."""
  return 1.0 - low_pass(size, r)


def band_pass(size, r_min, r_max):
  """Mask keeping the frequencies with r_min <= radius <= r_max."""
  return radial_mask(size, r_min, r_max)


def band_stop(size, r_min, r_max):
  """Mask removing the frequencies with r_min <= radius <= r_max."""
  return 1.0 - radial_mask(size, r_min, r_max)


def make_mask(kind, size, r_min=0.0, r_max=None):
  """Builds a named mask: low_pass/high_pass use r_max as the cut-off radius."""
  if kind in ("low_pass", "high_pass"):
    return {"low_pass": low_pass, "high_pass": high_pass}[kind](size, r_max)
  if kind in ("band_pass", "band_stop"):
    return {"band_pass": band_pass, "band_stop": band_stop}[kind](size, r_min, r_max)
  raise ValueError(f"kind={kind!r} is not one of {', '.join(FILTERS)}")


def symmetrize(mask):
  """Smallest superset of a centred mask that is conjugate-symmetric: m(k) or m(-k).

  The filtered image is real only if the mask keeps a frequency together with its
  conjugate -k; an arbitrary mask (e.g. a dominant-frequency map) is extended to
  keep both. Radial masks are already symmetric and are returned unchanged.
  """
  mask = tf.convert_to_tensor(mask, tf.float32)
  unshifted = tf.signal.ifftshift(mask)
  # -k modulo the size: reverse the axes, then roll so that index 0 stays at 0.
  negated = tf.roll(tf.reverse(unshifted, [0, 1]), shift=[1, 1], axis=[0, 1])
  return tf.signal.fftshift(tf.maximum(unshifted, negated))


def apply_mask(images, mask):
  """Filters float images [B, H, W, C] (or [H, W, C]) by a centred binary mask [H, W].

  Each channel is transformed with a 2-D real FFT, multiplied by the (symmetrized)
  mask and transformed back, so the output is real and has the input's shape/dtype.
  """
  images = tf.convert_to_tensor(images)
  if images.shape.rank not in (3, 4):
    raise ValueError(f"images must be [H, W, C] or [B, H, W, C], got shape {images.shape}")
  mask = tf.convert_to_tensor(mask, tf.float32)
  height, width = images.shape[-3], images.shape[-2]
  if tuple(mask.shape) != (height, width):
    raise ValueError(f"mask shape {tuple(mask.shape)} does not match the images' "
                     f"(height, width) = {(height, width)}")
  # rfft2d keeps the non-negative x frequencies only: columns 0..W//2 of the unshifted mask.
  half = tf.signal.ifftshift(symmetrize(mask))[:, :width // 2 + 1]
  channels_first = tf.experimental.numpy.moveaxis(tf.cast(images, tf.float32), -1, -3)
  spectrum = tf.signal.rfft2d(channels_first) * tf.cast(half, tf.complex64)
  filtered = tf.signal.irfft2d(spectrum, fft_length=[height, width])
  return tf.cast(tf.experimental.numpy.moveaxis(filtered, -3, -1), images.dtype)
