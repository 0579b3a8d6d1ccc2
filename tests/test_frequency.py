"""Frequency filters against numpy.fft; reconstruction; energy of natural images."""
import numpy as np
import pytest
import tensorflow as tf

from tfrandlabels import data
from tfrandlabels.data import frequency


def _numpy_filter(images, centred_mask):
  """Reference: full complex FFT per image and channel, mask in the unshifted layout."""
  spectrum = np.fft.fft2(images, axes=(1, 2)) * np.fft.ifftshift(centred_mask)[None, :, :, None]
  return np.fft.ifft2(spectrum, axes=(1, 2))


def test_radial_mask_is_centred():
  mask = frequency.radial_mask((8, 8), 0, 1)
  expected = np.zeros((8, 8))
  expected[4, 4] = expected[3, 4] = expected[5, 4] = expected[4, 3] = expected[4, 5] = 1
  np.testing.assert_array_equal(mask, expected)
  odd = frequency.radius_grid((5, 7))
  assert odd[2, 3] == 0 and odd[0, 0] == pytest.approx(np.hypot(2, 3))


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (3, 7, 9, 1), (1, 32, 32, 3)])
@pytest.mark.parametrize("kind, r_min, r_max", [
    ("low_pass", 0, 3), ("high_pass", 0, 3), ("band_pass", 2, 4.5), ("band_stop", 1, 2.5)])
def test_radial_filters_match_numpy(shape, kind, r_min, r_max):
  images = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  mask = frequency.make_mask(kind, shape[1:3], r_min, r_max)
  reference = _numpy_filter(images.astype(np.float64), mask)
  assert np.abs(reference.imag).max() < 1e-9  # Radial masks are conjugate-symmetric.
  np.testing.assert_allclose(frequency.apply_mask(images, mask), reference.real, atol=2e-5)


def test_arbitrary_masks_are_symmetrized_and_give_real_images():
  rng = np.random.default_rng(1)
  mask = (rng.uniform(size=(9, 8)) < 0.2).astype(np.float32)
  symmetric = frequency.symmetrize(mask).numpy()
  assert np.all(symmetric >= mask)
  unshifted = np.fft.ifftshift(symmetric)
  negated = np.roll(unshifted[::-1, ::-1], 1, axis=(0, 1))
  np.testing.assert_array_equal(unshifted, negated)
  images = rng.normal(size=(2, 9, 8, 3))
  reference = _numpy_filter(images, symmetric)
  assert np.abs(reference.imag).max() < 1e-9
  np.testing.assert_allclose(frequency.apply_mask(images.astype(np.float32), mask),
                             reference.real, atol=2e-5)


def test_low_plus_high_pass_reconstructs_the_input():
  images = np.random.default_rng(2).uniform(0, 1, (4, 16, 16, 3)).astype(np.float32)
  for r in (0, 2.5, 6, 30):
    total = (frequency.apply_mask(images, frequency.low_pass(16, r))
             + frequency.apply_mask(images, frequency.high_pass(16, r)))
    np.testing.assert_allclose(total, images, atol=1e-5)


def test_single_image_and_dtype_are_kept():
  image = tf.random.stateless_uniform((8, 8, 3), seed=[1, 2], dtype=tf.float64)
  out = frequency.apply_mask(image, frequency.low_pass(8, 2))
  assert out.shape == (8, 8, 3) and out.dtype == tf.float64


def test_low_pass_keeps_most_energy_of_natural_images(embedded_dir):
  batch = np.stack([e["image"] for e in data.load(
      "embedded", "test[:200]", data_dir=embedded_dir).as_numpy_iterator()]).astype(np.float32)
  batch -= batch.mean(axis=(1, 2), keepdims=True)
  kept = frequency.apply_mask(batch, frequency.low_pass(32, 8)).numpy()
  # 8 of 16 cycles keeps ~20% of the frequency plane; natural images hold most of
  # their (non-DC) energy there. White noise would keep ~20%.
  assert (kept ** 2).sum() / (batch ** 2).sum() > 0.8
  noise = np.random.default_rng(3).normal(size=batch.shape).astype(np.float32)
  kept_noise = frequency.apply_mask(noise, frequency.low_pass(32, 8)).numpy()
  assert (kept_noise ** 2).sum() / (noise ** 2).sum() < 0.3


@pytest.mark.parametrize("call, message", [
    (lambda: frequency.low_pass(8, -1), "r=-1 must be a finite number >= 0"),
    (lambda: frequency.radial_mask(8, 3, 1), "r_max=1 must be >= r_min=3"),
    (lambda: frequency.radial_mask(0, 0, 1), "size=0 must be a positive int"),
    (lambda: frequency.make_mask("notch", 8, 0, 1), "kind='notch' is not one of"),
    (lambda: frequency.apply_mask(np.zeros((1, 8, 8, 3), np.float32), np.ones((4, 4))),
     r"mask shape \(4, 4\) does not match"),
    (lambda: frequency.apply_mask(np.zeros((8, 8), np.float32), np.ones((8, 8))),
     "images must be"),
])
def test_bad_input(call, message):
  with pytest.raises(ValueError, match=message):
    call()
