"""Analysis `class_spectra`: class-wise mean amplitude spectra and ADCS (Wang et al.,
ICCV 2023, Sec. 3.1).

E_c is the mean amplitude spectrum |F(u, v)| of the class's images (centred, per
channel), streamed over the split batch by batch (`spectra.class_mean_spectra`), from
the images as the model sees them (after the batch ops). ADCS_c(u, v) = sum over
c' != c of sign(E_c - E_c'), in [1 - C, C - 1], is C - 1 where class c has more
amplitude than every other class: the frequencies that tell the class apart in the
data, before any model. It describes the data only; the model is not used.

The report shows each class's ADCS averaged over the channels, its mean over the low,
mid and high thirds of the radial frequency range (`radial_bands`), and, on a
planted-band data set, its mean inside the class's planted band.
"""
import numpy as np

from tfrandlabels.analyses import registry
from tfrandlabels.analysis import spectra
from tfrandlabels.data import frequency
from tfrandlabels.data import planted
from tfrandlabels.errors import ConfigError
from tfrandlabels.pipeline import frequency_plots
from tfrandlabels.pipeline import report

RADIAL_BANDS = ("low", "mid", "high")
PLANTED = tuple(f"planted_{band}" for band in planted.BANDS)


def radial_bands(height, width):
  """The low, mid and high thirds of the frequencies, bool masks [H, W] (centred).

  A frequency's radius is divided by the Nyquist radius min(H, W) / 2: low below 1/3,
  mid below 2/3, high above (the corners beyond the Nyquist radius count as high).
  """
  relative = frequency.radius_grid((height, width)) / (min(height, width) / 2)
  thirds = np.digitize(relative, [1 / 3, 2 / 3])
  return {name: thirds == index for index, name in enumerate(RADIAL_BANDS)}


def planted_bands(dataset, height, width):
  """Each class's planted frequencies, bool [C, H, W], if `dataset` is a planted-band
  set seen at its own size (H, W); else None."""
  if dataset not in PLANTED or (height, width) != (planted.IMAGE_SIZE,) * 2:
    return None
  return planted.planted_bands(dataset)


def run(model, data, settings):
  del model, settings  # ADCS is a property of the data.
  try:
    means = spectra.class_mean_spectra(data.batches(), data.num_classes)
  except ValueError as e:
    raise ConfigError(f"class_spectra on {data.dataset} {data.split}: {e}") from None
  adcs = spectra.adcs(means)
  limit = data.num_classes - 1
  rows = [("ADCS (channel mean)", adcs.mean(axis=-1), "coolwarm", (-limit, limit))]
  bands = planted_bands(data.dataset, *adcs.shape[1:3])
  if bands is not None:
    rows.append(("planted band", bands, "gray", (0, 1)))
  return registry.Output(
      metrics={**data.describe(), "mean_spectra": means.tolist(), "adcs": adcs.tolist()},
      plots={"adcs": (
          f"ADCS per class on {data.dataset} {data.split}, averaged over the channels "
          f"(centred spectrum: zero frequency in the middle; range {-limit} to {limit}). "
          f"Red: the class has more amplitude there than the other classes (at {limit}, more "
          "than all of them); blue: less."
          + (" Bottom row: each class's planted frequencies." if bands is not None else ""),
          report.figure_png(frequency_plots.class_maps(rows, colorbar="ADCS")))})


def band_means(adcs, bands=None):
  """Per class, the channel-mean ADCS averaged over each radial third (and the band).

  Args:
    adcs: ADCS [C, H, W, channels].
    bands: optional planted bands, bool [C, H, W].

  Returns:
    A list of C dicts {"low", "mid", "high"[, "planted"]: float}.
  """
  shown = np.asarray(adcs, np.float64).mean(axis=-1)
  thirds = radial_bands(*shown.shape[1:])
  means = [{name: float(map_[mask].mean()) for name, mask in thirds.items()}
           for map_ in shown]
  if bands is not None:
    for c, entry in enumerate(means):
      entry["planted"] = float(shown[c][bands[c]].mean())
  return means


def section(payload, figures):
  blocks, summary = [], []
  for name, entry in payload["models"].items():
    metrics = entry["metrics"]
    adcs = np.asarray(metrics["adcs"])
    classes = len(adcs)
    bands = planted_bands(metrics["dataset"], *adcs.shape[1:3])
    means = band_means(adcs, bands)
    header = ["class", "ADCS low", "ADCS mid", "ADCS high"]
    if bands is not None:
      header.append("ADCS in planted band")
      inside = np.mean([m["planted"] for m in means])
      summary.append(f"{metrics['dataset']}: inside its planted band a class's ADCS averages "
                     f"{inside:.1f} (of at most {classes - 1}): the bands separate the "
                     "classes in the data's spectra.")
    rows = [[c] + [f"{m[key]:.2f}" for key in ("low", "mid", "high", "planted")[:len(header) - 1]]
            for c, m in enumerate(means)]
    blocks += [f"Model {name} ({metrics['dataset']} {metrics['split']}): ADCS averaged over "
               "the channels and over the low, mid and high thirds of the radial "
               f"frequencies (range {1 - classes} to {classes - 1}; positive: the class has "
               "more amplitude there than most others).",
               report.Table(header=header, rows=rows, numeric=tuple(range(1, len(header))))]
    blocks += list(figures[name])
  return report.Section(title="Class-wise spectra (ADCS)", summary=summary, blocks=blocks)


ANALYSIS = registry.register(registry.Analysis(
    name="class_spectra", title="Class-wise spectra (ADCS)", flags=(), run=run,
    section=section, needs_labels=False))
