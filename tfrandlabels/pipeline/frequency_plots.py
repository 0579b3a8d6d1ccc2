"""Figures of the frequency-shortcut study (Wang et al., ICCV 2023), as pure functions
from plain data to a matplotlib Figure (`report.new_figure`, never pyplot).

* `class_maps`: one centred [H, W] map per class, in rows (ADCS, DFMs, planted bands).
* `shortcut_rates`: TPR and FPR per class of DFM-filtered images, per data source.
* `learning_order`: accuracy on low- and high-pass filtered test images during training.
"""
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

from tfrandlabels.pipeline import report

PANEL_INCHES = 1.25


def class_maps(rows: Sequence[Tuple[str, np.ndarray, str, Optional[Tuple[float, float]]]],
               colorbar: Optional[str] = None) -> Figure:
  """A grid of centred maps: one row per kind of map, one column per class.

  Args:
    rows: (label, maps [C, H, W], colour map, (vmin, vmax) or None for the row's own
      range) per row; zero frequency at [H // 2, W // 2], the panel's centre.
    colorbar: label of a colour bar for the first row, or None for none.

  Returns:
    The figure; class c is the title of column c.
  """
  if not rows:
    raise ValueError("rows must hold at least one (label, maps, cmap, limits) row.")
  classes = len(rows[0][1])
  figure = report.new_figure(PANEL_INCHES * classes + 1, PANEL_INCHES * len(rows) + 0.4)
  axes = np.asarray(figure.subplots(len(rows), classes, squeeze=False))
  for row, (label, maps, cmap, limits) in enumerate(rows):
    maps = np.asarray(maps, np.float64)
    if maps.ndim != 3 or len(maps) != classes:
      raise ValueError(f"rows[{row}] ({label!r}) must hold {classes} maps [H, W], got shape "
                       f"{maps.shape}.")
    low, high = limits or (np.nanmin(maps), np.nanmax(maps))
    for c in range(classes):
      image = axes[row, c].imshow(maps[c], cmap=cmap, vmin=low, vmax=high,
                                  interpolation="nearest")
      axes[row, c].set(xticks=[], yticks=[])
      if row == 0:
        axes[row, c].set_title(f"class {c}", fontsize="small")
        first = image
    axes[row, 0].set_ylabel(label, fontsize="small")
  if colorbar:
    figure.colorbar(first, ax=axes[0, :].tolist(), shrink=0.8, label=colorbar)
  return figure


def shortcut_rates(sources: Mapping[str, Mapping[str, Sequence[Optional[float]]]],
                   min_tpr: float, max_fpr: float) -> Figure:
  """TPR (top) and FPR (bottom) per class of images filtered by each class's DFM.

  Args:
    sources: data source name -> {"tpr": [C], "fpr": [C]} (None where undefined), e.g.
      "in_distribution" and each shift.
    min_tpr, max_fpr: the shortcut thresholds, drawn as dashed lines.
  """
  if not sources:
    raise ValueError("sources must map at least one data source to its rates.")
  figure = report.new_figure(11, 5)
  tpr_axes, fpr_axes = figure.subplots(2, 1, sharex=True)
  width = 0.8 / len(sources)
  for index, (name, rates) in enumerate(sources.items()):
    for axes, key in ((tpr_axes, "tpr"), (fpr_axes, "fpr")):
      values = np.array([np.nan if v is None else v for v in rates[key]], np.float64)
      positions = np.arange(len(values)) + (index - (len(sources) - 1) / 2) * width
      axes.bar(positions, values, width, color=f"C{index % 10}", label=name)
  tpr_axes.axhline(min_tpr, color="black", linestyle="--", linewidth=1,
                   label=f"shortcut: TPR >= {min_tpr:g}")
  fpr_axes.axhline(max_fpr, color="black", linestyle="--", linewidth=1,
                   label=f"shortcut: FPR <= {max_fpr:g}")
  tpr_axes.set(ylabel="TPR (class kept)", ylim=(0, 1.02))
  fpr_axes.set(ylabel="FPR (others pulled in)", ylim=(0, 1.02), xlabel="class")
  fpr_axes.set_xticks(range(len(next(iter(sources.values()))["tpr"])))
  for axes in (tpr_axes, fpr_axes):
    axes.grid(alpha=0.3, axis="y")
  tpr_axes.legend(fontsize="small", ncol=min(4, len(sources) + 1), loc="upper right")
  return figure


def learning_order(step: Sequence[int], accuracy: Mapping[str, Sequence[float]],
                   chance: float, title: str) -> Figure:
  """Accuracy during training on low-pass (left) and high-pass (right) filtered images.

  Args:
    step: the logged training steps.
    accuracy: curve name -> accuracy per step: `unfiltered` (drawn in both panels,
      black) and filter keys such as `low_pass_4`, `high_pass_4`.
    chance: accuracy of guessing, drawn dotted.
    title: prefix of the panel titles (e.g. the data set).
  """
  figure = report.new_figure(11, 4)
  panels = dict(zip(("low_pass", "high_pass"), figure.subplots(1, 2, sharey=True)))
  for kind, axes in panels.items():
    curves = sorted((k for k in accuracy if k.startswith(kind + "_")),
                    key=lambda k: float(k[len(kind) + 1:]))
    for index, key in enumerate(curves):
      radius = key[len(kind) + 1:]
      keeps = f"r <= {radius}" if kind == "low_pass" else f"r > {radius}"
      axes.plot(step, accuracy[key], color=f"C{index % 10}", marker=".",
                label=f"{kind} ({keeps})")
    if "unfiltered" in accuracy:
      axes.plot(step, accuracy["unfiltered"], color="black", linewidth=2, label="unfiltered")
    axes.axhline(chance, color="gray", linestyle=":", label="chance")
    axes.set(xlabel="training step", title=f"{title}: {kind.replace('_', '-')} test images",
             ylim=(0, 1.02))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="lower right")
  panels["low_pass"].set_ylabel("test accuracy")
  return figure
