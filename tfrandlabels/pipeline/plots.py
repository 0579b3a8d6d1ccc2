"""Every figure of the pipeline, as pure functions from plain data to a matplotlib Figure.

Each function takes data as the analyses produce it (lists or arrays, no files) and
returns a Figure from `report.new_figure`; `report.figure_png` turns it into the PNG of
a `report.Plot`. Nothing here uses pyplot, so drawing is headless and leaves no figure
open in pyplot's registry.

* `learning_curves`: train accuracy and loss of finetuning runs (Maennel et al., Fig. 1).
* `attribution`: SmoothGrad and Grad-CAM++ maps of test images, per model.
* `transfer_function`, `misalignment`, `eigenfilters`: first-layer alignment with the
  data (Fig. 3 and 4); `layer_alignment`: every conv layer's with its input (Sec. 2.5).
* `gaussian`: the transfer function on Gaussian inputs (Fig. 4 left, App. E.1).
* `volume_panels`, `volume_heat_maps`: the input-space volume element of a feature map
  with the model's predictions and decision boundaries (Zavatone-Veth et al., 2023).
"""
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from tfrandlabels.pipeline import report

INTERVAL = "95% t-interval of the mean"
# With two seeds the t-interval is 12.7 standard errors wide: a band that size says
# nothing the two seed lines do not show better.
MIN_SEEDS_FOR_BAND = 3
TRACKS = {"upstream": "random labels", "downstream": "real labels"}
_METRICS = ("accuracy", "loss")
_CURVE_KEYS = ("step", "seeds") + tuple(f"{metric}_{part}" for metric in _METRICS
                                        for part in ("per_seed", "mean", "ci95"))


def _check_curve(name: str, curve: Mapping) -> None:
  missing = [key for key in _CURVE_KEYS if key not in curve]
  if missing:
    raise ValueError(f"runs[{name!r}] is missing {missing}: pass the dict that "
                     "curves.learning_curves returns for the run's histories.")


def _seeds(count: int) -> str:
  return f"{count} seed{'' if count == 1 else 's'}"


def _draw_run(axes, name: str, curve: Mapping, metric: str, color: str):
  """Draws each seed thin, their mean bold and, with enough seeds, the mean's interval.

  Returns:
    The run's legend handle (the mean line, or the band and the line) and its label.
  """
  steps = np.asarray(curve["step"], dtype=np.float64)
  for values in curve[f"{metric}_per_seed"]:
    axes.plot(steps, values, color=color, linewidth=0.7, alpha=0.35)
  mean = np.asarray(curve[f"{metric}_mean"], dtype=np.float64)
  line, = axes.plot(steps, mean, color=color, linewidth=2.2)
  label = f"{name}: mean of {_seeds(curve['seeds'])}"
  if curve["seeds"] < MIN_SEEDS_FOR_BAND:
    return line, label
  half_width = np.asarray(curve[f"{metric}_ci95"], dtype=np.float64)
  lower = mean - half_width
  if metric == "loss":
    # The loss axis is logarithmic, where a band reaching zero cannot be drawn: it
    # stops at a hundredth of the mean.
    lower = np.maximum(lower, mean / 100)
  band = axes.fill_between(steps, lower, mean + half_width, color=color, alpha=0.2,
                           linewidth=0)
  return (band, line), f"{label} ± {INTERVAL}"


def learning_curves(runs: Mapping[str, Mapping], target: float,
                    title: Optional[str] = None) -> Figure:
  """Train accuracy and loss during finetuning: every seed, their mean and its interval.

  Args:
    runs: run name -> its curve as `curves.learning_curves` returns it ("step",
      "seeds", and per seed, mean and ci95 of "accuracy" and "loss").
    target: the target train accuracy, drawn as a dashed line.
    title: drawn above both panels, if given (e.g. what the labels were).

  Returns:
    Two panels, train accuracy and train loss (log scale). Each seed is a thin line and
    the mean a bold line in the run's colour; runs of at least MIN_SEEDS_FOR_BAND seeds
    also get a band, the 95% Student-t interval of the mean.
  """
  if not runs:
    raise ValueError("runs must map at least one run name to its learning curve.")
  figure = report.new_figure(11, 4)
  accuracy_axes, loss_axes = figure.subplots(1, 2)
  legend = []
  for index, (name, curve) in enumerate(runs.items()):
    _check_curve(name, curve)
    color = f"C{index % 10}"
    legend.append(_draw_run(accuracy_axes, name, curve, "accuracy", color))
    _draw_run(loss_axes, name, curve, "loss", color)
  legend.append((accuracy_axes.axhline(target, color="black", linestyle="--", linewidth=1),
                 f"target accuracy {target:g}"))
  accuracy_axes.set(xlabel="iteration (finetuning step)", ylabel="train accuracy",
                    title="Train accuracy (thin lines: single seeds)", ylim=(0, 1.02))
  loss_axes.set(xlabel="iteration (finetuning step)", ylabel="train loss (cross-entropy)",
                title="Train loss", yscale="log")
  for axes in (accuracy_axes, loss_axes):
    axes.grid(alpha=0.3)
  handles, labels = zip(*legend)
  # Below the panels: inside, it hid the rise of the slower runs' curves.
  figure.legend(handles, labels, loc="outside lower center", ncols=2, fontsize="small")
  if title:
    figure.suptitle(title)
  return figure


def _checked_images(images, labels: Sequence[int], maps: Mapping[str, Mapping]) -> np.ndarray:
  """Validates the inputs of `attribution`; returns the images as uint8."""
  images = np.asarray(images)
  if (images.ndim != 4 or images.shape[0] == 0 or images.shape[-1] not in (1, 3)
      or not np.issubdtype(images.dtype, np.integer) or images.min() < 0
      or images.max() > 255):
    raise ValueError(f"images must be uint8 [n, H, W, 1 or 3] with n >= 1, got "
                     f"{images.dtype} {images.shape}.")
  if len(labels) != images.shape[0]:
    raise ValueError(f"labels must hold one label per image ({images.shape[0]}), got "
                     f"{len(labels)}.")
  if not isinstance(maps, Mapping) or not maps:
    raise ValueError("maps must map at least one model name to its {'saliency', "
                     "'gradcam++'} maps.")
  for model_name, model_maps in maps.items():
    for kind in ("saliency", "gradcam++"):
      if kind not in model_maps:
        raise ValueError(f"maps[{model_name!r}] is missing {kind!r}.")
      if np.shape(model_maps[kind]) != images.shape[:3]:
        raise ValueError(f"maps[{model_name!r}][{kind!r}] must have shape {images.shape[:3]} "
                         f"(one [H, W] map per image), got {np.shape(model_maps[kind])}.")
  return images.astype(np.uint8)


def attribution(images, labels: Sequence[int], class_names: Optional[Sequence[str]],
                maps: Mapping[str, Mapping]) -> Figure:
  """Where models look: rows are images; columns the image, then two maps per model.

  Args:
    images: uint8 [n, H, W, 1 or 3], the test images.
    labels: n class indices, the images' true labels.
    class_names: the name of each class, or None to show "class K".
    maps: model name -> {"saliency": [n, H, W], "gradcam++": [n, H, W]}, values in
      [0, 1]; models are shown in this order.

  Returns:
    A grid: per model, the SmoothGrad map and the Grad-CAM++ map over the image.
  """
  images = _checked_images(images, labels, maps)
  columns = 1 + 2 * len(maps)
  figure = report.new_figure(1.7 * columns, 1.8 * len(images))
  grid = figure.subplots(len(images), columns, squeeze=False)
  shown = images[..., 0] if images.shape[-1] == 1 else images
  image_cmap = "gray" if images.shape[-1] == 1 else None
  for row, (image, label) in enumerate(zip(shown, labels)):
    label = int(label)
    grid[row, 0].imshow(image, cmap=image_cmap, interpolation="nearest")
    grid[row, 0].set_ylabel(class_names[label] if class_names else f"class {label}")
    for index, (model_name, model_maps) in enumerate(maps.items()):
      saliency_axes, gradcam_axes = grid[row, 1 + 2 * index], grid[row, 2 + 2 * index]
      saliency_axes.imshow(np.asarray(model_maps["saliency"])[row], cmap="inferno", vmin=0,
                           vmax=1, interpolation="nearest")
      gradcam_axes.imshow(image, cmap=image_cmap, interpolation="nearest")
      gradcam_axes.imshow(np.asarray(model_maps["gradcam++"])[row], cmap="jet", vmin=0, vmax=1,
                          alpha=0.5, interpolation="bilinear")
      if row == 0:
        saliency_axes.set_title(f"{model_name}\nSmoothGrad", fontsize="small")
        gradcam_axes.set_title(f"{model_name}\nGrad-CAM++", fontsize="small")
  grid[0, 0].set_title("image", fontsize="small")
  for axes in grid.ravel():
    axes.set_xticks([])
    axes.set_yticks([])
  return figure


def _snapshots(track: Mapping, count: int = 4) -> List[int]:
  """Indices of `count` records spread over training, first and last included."""
  total = len(track["step"])
  return sorted(set(np.linspace(0, total - 1, min(count, total)).round().astype(int)))


def _tracks(alignment: Mapping) -> List[Tuple[str, Mapping]]:
  """(name, track) of the alignment's upstream and downstream tracks that hold records."""
  tracks = [(name, alignment[name]) for name in TRACKS
            if alignment.get(name) and alignment[name]["step"]]
  if not tracks:
    raise ValueError(f"alignment holds no track {list(TRACKS)} with records; the trainer's "
                     "AlignmentHook writes them to history.jsonl.")
  return tracks


SIGMA_LABEL = "sigma (std of the data along an eigenvector of Sigma_x)"


def _transfer_panels(panels: Sequence[Tuple[str, Mapping]]) -> Figure:
  """One panel per (title, track): f(sigma) at a few points of training, sigma on a
  log axis."""
  figure = report.new_figure(5 * len(panels), 3.6)
  for axes, (title, track) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
    for i in _snapshots(track):
      axes.plot(track["sigma"], track["transfer_function"][i], marker=".",
                label=f"step {track['step'][i]}")
    axes.set(xlabel=SIGMA_LABEL, ylabel="f(sigma)", title=title, xscale="log")
    axes.legend(fontsize=8)
  return figure


def transfer_function(alignment: Mapping) -> Figure:
  """f(sigma) at several points of training, upstream and downstream (Fig. 4).

  Args:
    alignment: {"upstream": track, "downstream": track (optional)}, each track
      {"sigma", "step", "misalignment", "misalignment_random_basis",
      "transfer_function" [records][len(sigma)]}.

  Returns:
    One panel per track that holds records.
  """
  return _transfer_panels([(f"{name} ({TRACKS[name]})", track)
                           for name, track in _tracks(alignment)])


def final_transfer_function(sigma: Sequence[float], f: Sequence[float]) -> Figure:
  """One model's f(sigma) (no training track): the `alignment` analysis's figure."""
  return _transfer_panels([("first layer", {"sigma": sigma, "step": ["of the model"],
                                            "transfer_function": [f]})])


def misalignment(alignment: Mapping) -> Figure:
  """Misalignment over training against the random-basis baseline.

  Args:
    alignment: as for `transfer_function`.

  Returns:
    One panel: per track, the misalignment in the data basis (solid) and in a random
    orthonormal basis (dashed, same colour).
  """
  figure = report.new_figure(6, 3.6)
  axes = figure.subplots()
  for name, track in _tracks(alignment):
    line, = axes.plot(track["step"], track["misalignment"], label=f"{name}: data basis")
    axes.plot(track["step"], track["misalignment_random_basis"], linestyle="--",
              color=line.get_color(), label=f"{name}: random basis")
  axes.set(xlabel="iteration", ylabel="misalignment M", yscale="log")
  axes.legend(fontsize=8)
  return figure


def speedup_by_depth(depths: Mapping[str, Sequence[Mapping]],
                     title: Optional[str] = None) -> Figure:
  """Speed-up over scratch against the number k of transferred layers.

  Args:
    depths: {variant: [{"k", "ratio", "ci95_low", "ci95_high"}, ...]}, k ascending; a
      ratio of None (a seed missed the target) is left out, an interval of None drawn
      without error bar.
    title: the panel's title, if given (e.g. what the downstream labels were).

  Returns:
    One panel: per variant, the speed-up at each k with its 95% interval, and the line
    of no speed-up (1x). Above it, the transferred layers help; below, they hurt.
  """
  figure = report.new_figure(6, 3.6)
  axes = figure.subplots()
  # Several variants are drawn a little apart so their error bars do not overlap; one
  # variant sits exactly at its k.
  offsets = np.linspace(-0.1, 0.1, len(depths)) if len(depths) > 1 else [0.0]
  for offset, (variant, points) in zip(offsets, depths.items()):
    points = [p for p in points if p["ratio"] is not None]
    ks = np.array([p["k"] for p in points], float) + offset
    ratios = np.array([p["ratio"] for p in points])
    low = np.array([p["ratio"] if p["ci95_low"] is None else p["ci95_low"] for p in points])
    high = np.array([p["ratio"] if p["ci95_high"] is None else p["ci95_high"]
                     for p in points])
    axes.errorbar(ks, ratios, yerr=[ratios - low, high - ratios], marker="o", capsize=3,
                  label=variant)
  axes.axhline(1.0, color="grey", linestyle=":", label="scratch (1x)")
  every_k = sorted({p["k"] for points in depths.values() for p in points})
  axes.set_xticks(every_k)
  axes.set(xlabel="transferred layers k", ylabel="speed-up over scratch")
  if title:
    axes.set_title(title)
  axes.legend(fontsize=8)
  return figure


def _misalignment_scale(track: Mapping) -> str:
  """"log" where a layer's M and its baseline span more than a factor of 10 (an aligned
  layer's M falls far below the baseline), else "linear", whose ticks read plainly."""
  values = np.asarray(track["misalignment"] + track["misalignment_random_basis"])
  return "log" if values.min() > 0 and values.max() > 10 * values.min() else "linear"


LAYERS_PER_ROW = 5


def layer_alignment(layers: Mapping[str, Mapping]) -> Figure:
  """Each conv layer's alignment with its input over pretraining (Sec. 2.5 of the paper).

  Args:
    layers: conv layer name -> its track, in forward order ("step", "dim",
      "misalignment", "misalignment_random_basis", "subspace_overlap",
      "subspace_overlap_random"), as `results.LayerTrack` holds it.

  Returns:
    A pair of panels per layer with records, at most LAYERS_PER_ROW pairs to a row, in
    the given order: on top the misalignment M between the eigenvectors of the layer's
    Sigma_x and Sigma_w (solid) against M in random orthonormal bases (dashed), on a log
    axis where they span more than a factor of 10; below the top-k subspace overlap
    (solid) against k/d, what a random subspace scores (dashed), from 0 to a little
    above the values.
  """
  layers = [(name, track) for name, track in layers.items() if track["step"]]
  if not layers:
    raise ValueError("layers must map at least one conv layer to a track with records; "
                     "the trainer's AlignmentHook writes them to history.jsonl.")
  columns = min(len(layers), LAYERS_PER_ROW)
  rows = -(-len(layers) // columns)
  figure = report.new_figure(3.6 * columns + 0.6, 5.6 * rows)
  grid = figure.subplots(2 * rows, columns, squeeze=False)
  for index in range(len(layers), rows * columns):
    row, column = divmod(index, columns)
    grid[2 * row, column].set_axis_off()
    grid[2 * row + 1, column].set_axis_off()
  for index, (name, track) in enumerate(layers):
    k = round(track["subspace_overlap_random"][-1] * track["dim"])
    row, column = divmod(index, columns)
    top, bottom = grid[2 * row, column], grid[2 * row + 1, column]
    top.plot(track["step"], track["misalignment"], color="C0", marker=".",
             label="M, eigenbasis of Sigma_x")
    top.plot(track["step"], track["misalignment_random_basis"], color="C0", linestyle="--",
             label="M, random bases (no alignment)")
    bottom.plot(track["step"], track["subspace_overlap"], color="C1", marker=".",
                label=f"top-{k} subspace overlap")
    bottom.plot(track["step"], track["subspace_overlap_random"], color="C1",
                linestyle="--", label=f"k/d = {k}/{track['dim']} (random subspace)")
    top.set(title=f"{name} (d = {track['dim']})", yscale=_misalignment_scale(track))
    # From 0 (orthogonal subspaces) up to a little above the values, at most 1 (the same
    # subspace): overlaps near k/d would be flat lines on a [0, 1] axis.
    highest = max(track["subspace_overlap"] + track["subspace_overlap_random"])
    bottom.set(xlabel="pretraining step", ylim=(0, min(1.02, 1.25 * highest)))
    for axes in (top, bottom):
      axes.grid(alpha=0.3)
      axes.legend(fontsize=7)
  for row in range(rows):
    grid[2 * row, 0].set_ylabel("misalignment M")
    grid[2 * row + 1, 0].set_ylabel("subspace overlap")
  return figure


def _as_patch(filter_values) -> np.ndarray:
  """Scales one filter [kh, kw, c] to [0, 1] for display (grey if one channel)."""
  patch = np.asarray(filter_values, np.float64)
  span = np.abs(patch).max() or 1.0
  patch = 0.5 + 0.5 * patch / span
  return patch[..., 0] if patch.shape[-1] == 1 else patch[..., :3]


def eigenfilters(alignment: Mapping, model_label: str = "pretrained filters") -> Figure:
  """Top eigenvectors of Sigma_x (data) above those of Sigma_w (a model's filters), Fig. 3.

  Args:
    alignment: {"eigenfilters": {"data": [k, kh, kw, c], "pretrained": [k, kh, kw, c]}},
      largest eigenvalue first.
    model_label: names the filters' row.

  Returns:
    Two rows of k image patches.
  """
  rows = [("data (Sigma_x)", alignment["eigenfilters"]["data"]),
          (f"{model_label} (Sigma_w)", alignment["eigenfilters"]["pretrained"])]
  count = len(rows[0][1])
  figure = report.new_figure(1.2 * count, 2.8)
  grid = figure.subplots(2, count, squeeze=False)
  for row, (name, filters) in enumerate(rows):
    for column in range(count):
      grid[row, column].imshow(_as_patch(filters[column]), cmap="gray", vmin=0, vmax=1,
                               interpolation="nearest")
      grid[row, column].set_xticks([])
      grid[row, column].set_yticks([])
    grid[row, 0].set_ylabel(name, fontsize=7)
  return figure


def gaussian(gaussian: Mapping[str, Mapping]) -> Figure:  # pylint: disable=redefined-outer-name
  """f against the variance for each Gaussian setting, over seeds (Fig. 4 left, App. E.1).

  Args:
    gaussian: setting name -> {"dim", "widths", "samples", "seeds", "shape", and
      `gaussian.summarize`'s "variance", "first_step", "last_step", "first_mean",
      "last_mean", "last_sd"} (the gaussian stage's gaussian.json).

  Returns:
    One panel per setting: the seeds' mean f at the last record with a band of one
    standard deviation, and the mean at the first record, dashed.
  """
  if not gaussian:
    raise ValueError("gaussian must map at least one Gaussian setting to its summary.")
  figure = report.new_figure(5 * len(gaussian), 3.6)
  panels = figure.subplots(1, len(gaussian), squeeze=False)[0]
  for axes, run in zip(panels, gaussian.values()):
    variance, mean, sd = (np.asarray(run[k]) for k in ("variance", "last_mean", "last_sd"))
    line, = axes.plot(variance, mean, marker=".", label=f"step {run['last_step']:,}")
    if len(run["seeds"]) > 1:
      axes.fill_between(variance, mean - sd, mean + sd, color=line.get_color(), alpha=0.25,
                        label=f"1 s.d. over {len(run['seeds'])} seeds")
    axes.plot(variance, run["first_mean"], linestyle="--", color="grey",
              label=f"step {run['first_step']:,}")
    axes.set(xlabel="variance along the eigenvector (the paper's sigma axis)",
             ylabel="f", title=f"d={run['dim']}, widths {'/'.join(map(str, run['widths']))}, "
                               f"n={run['samples']}: {run['shape']}")
    axes.legend(fontsize=8)
  return figure


def _map(figure, axes, values, extent: float, label: str, ticks=None, **style) -> None:
  """Draws one [R, R] map over [-extent, extent]^2 (row r = r-th y value) with a colour bar."""
  image = axes.imshow(np.asarray(values), origin="lower", extent=(-extent, extent) * 2,
                      interpolation="nearest", **style)
  figure.colorbar(image, ax=axes, shrink=0.8, label=label, ticks=ticks)
  axes.set_xticks([])
  axes.set_yticks([])


def _boundaries(axes, predicted, extent: float) -> None:
  """Draws the decision boundaries: the outline of every predicted class's region."""
  predicted = np.asarray(predicted)
  axis = np.linspace(-extent, extent, predicted.shape[0])
  for value in np.unique(predicted):
    if np.any(predicted != value):
      axes.contour(axis, axis, (predicted == value).astype(float), levels=[0.5],
                   colors="white", linewidths=0.9)


def volume_panels(rows: Sequence[Mapping], extent: float, num_classes: int) -> Figure:
  """Predicted class, prediction entropy and log10 volume element over planes or grids.

  Args:
    rows: one dict per plane (or 2-D grid): "title"; "predicted", "entropy" and
      "log10_volume", [R, R] maps whose row r holds the r-th value of the second plane
      coordinate (drawn upward); optional "markers", [(x, y, text)] drawn on every panel
      (e.g. where the plane's three images lie).
    extent: the maps cover [-extent, extent]^2 in plane coordinates.
    num_classes: classes the model predicts (fixes each class's colour and the entropy
      scale, 0 to log10 num_classes).

  Returns:
    One row of three panels per plane; decision boundaries drawn on the volume panel.
  """
  if not rows:
    raise ValueError("rows must hold at least one plane's maps.")
  # Up to 10 classes get tab10's colours, one tick each; more share a gradient.
  class_style = ({"cmap": ListedColormap(colormaps["tab10"].colors[:num_classes]),
                  "ticks": range(num_classes)} if num_classes <= 10 else {"cmap": "turbo"})
  class_style.update(vmin=-0.5, vmax=num_classes - 0.5)
  figure = report.new_figure(12, 3.4 * len(rows))
  grid = figure.subplots(len(rows), 3, squeeze=False)
  for panels, row in zip(grid, rows):
    _map(figure, panels[0], row["predicted"], extent, "predicted class", **class_style)
    _map(figure, panels[1], row["entropy"], extent, "prediction entropy (base 10)",
         cmap="viridis", vmin=0, vmax=max(np.log10(num_classes), 1e-12))
    _map(figure, panels[2], row["log10_volume"], extent, "log10 volume element",
         cmap="magma")
    _boundaries(panels[2], row["predicted"], extent)
    panels[0].set_ylabel(row["title"])
    for axes in panels:
      for x, y, text in row.get("markers", ()):
        axes.annotate(text, (x, y), color="white", ha="center", va="center",
                      fontweight="bold", bbox={"boxstyle": "circle", "fc": "black",
                                               "alpha": 0.6, "lw": 0})
  for axes, title in zip(grid[0], ("predicted class", "prediction entropy",
                                   "log10 volume element")):
    axes.set_title(title)
  return figure


def volume_heat_maps(cells: Mapping[str, Mapping[str, Mapping]], extent: float) -> Figure:
  """Heat maps of log10 sqrt(det g) over a 2-D input grid, with decision boundaries.

  Args:
    cells: row name -> column name -> {"log10_volume": [R, R] (row r = r-th x2 value),
      "predicted": [R, R] predicted classes; optional "points" [N, 2] and "labels" [N],
      training data drawn as dots coloured by class}. Every row has the same columns.
    extent: the grid covers [-extent, extent]^2.

  Returns:
    One panel per cell, each with its own colour bar (volumes at initialization and
    after training differ by orders of magnitude).
  """
  if not cells:
    raise ValueError("cells must hold at least one row of maps.")
  columns = list(next(iter(cells.values())))
  figure = report.new_figure(4.2 * len(columns), 3.6 * len(cells))
  grid = figure.subplots(len(cells), len(columns), squeeze=False)
  for panels, (row_name, row) in zip(grid, cells.items()):
    for axes, column in zip(panels, columns):
      cell = row[column]
      _map(figure, axes, cell["log10_volume"], extent, "log10 sqrt(det g)", cmap="magma")
      _boundaries(axes, cell["predicted"], extent)
      if "points" in cell:
        points = np.asarray(cell["points"])
        axes.scatter(points[:, 0], points[:, 1], c=np.asarray(cell["labels"]), cmap="coolwarm",
                     s=36 if len(points) < 20 else 4, edgecolors="white", linewidths=0.3)
      axes.set_title(f"{row_name}: {column}", fontsize="medium")
  return figure
