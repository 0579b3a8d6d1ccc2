"""The shape of a curve in words: how the report names what f(sigma) does.

Maennel et al. (NeurIPS 2020, App. E.1) describe the first layer's transfer function
over the data's variances by its shape: decreasing (d=10), rising then falling (d=30,
wide), rising then saturating (d=30, narrow). `curve_shape` makes that call on a
measured curve, so the report and the results state a shape, not a reading of a plot.

The curve is first smoothed by a moving average over a tenth of its points (per-direction
noise of f is a few percent), then, with `span` the smoothed curve's range and `peak` its
highest point:

* "flat": span below `flat` times the curve's mean;
* "interior minimum": the lowest point lies more than `tolerance` * span below both the
  start and the end (falling, then rising again);
* "decreasing": the peak rises less than `tolerance` * span above the start;
* "interior maximum": it rises more than that, and the end falls more than that below it;
* "saturating": it ends near its peak, and the second half adds less than `tolerance` of
  the whole rise;
* "increasing": it ends near its peak, still rising through the second half.
"""
import numpy as np

SHAPES = ("flat", "interior minimum", "decreasing", "interior maximum", "saturating",
          "increasing")


def curve_shape(values, tolerance=0.25, flat=0.05):
  """One of SHAPES for a curve sampled at equally spaced points, first to last.

  Args:
    values: the curve's values, at least 3 finite numbers.
    tolerance: share of the range below which a rise or a fall does not count.
    flat: a range below this share of the mean is "flat".

  Returns:
    The shape's name.
  """
  values = np.asarray(values, dtype=np.float64)
  if values.ndim != 1 or values.size < 3 or not np.all(np.isfinite(values)):
    raise ValueError(f"values must be at least 3 finite numbers, got {values!r}")
  if not 0 < tolerance < 1 or not flat >= 0:
    raise ValueError(f"need 0 < tolerance < 1 and flat >= 0, got {tolerance}, {flat}")
  window = max(1, values.size // 10)
  smooth = np.convolve(values, np.ones(window) / window, mode="valid")
  peak, low = smooth.max(), smooth.min()
  span = peak - low
  if span <= flat * abs(smooth.mean()):
    return "flat"
  if min(smooth[0], smooth[-1]) - low > tolerance * span:
    return "interior minimum"
  if peak - smooth[0] <= tolerance * span:
    return "decreasing"
  if peak - smooth[-1] > tolerance * span:
    return "interior maximum"
  late_rise = smooth[-1] - smooth[smooth.size // 2]
  return "saturating" if late_rise < tolerance * (smooth[-1] - smooth[0]) else "increasing"
