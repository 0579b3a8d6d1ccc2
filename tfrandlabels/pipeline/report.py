"""The report of the transfer experiment: one self-contained HTML file plus its figures.

`write_report` renders `results.json` (written by the analyze stage) and, when given,
attribution maps and alignment figures into `<workdir>/report.html`. Every figure is a
PNG saved to `<workdir>/figures/NAME.png` and embedded in the page as a base64 data URI,
so the page has no external files, scripts or style sheets: it can be mailed or opened
from a bucket as it is. All text is HTML-escaped.

Figures are drawn on matplotlib `Figure` objects with an explicit Agg canvas, never
through pyplot: rendering is headless, needs no backend setting, and leaves no figure
open in pyplot's global registry.
"""
import base64
import html
import json
import os
import re
from io import BytesIO
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfrandlabels import io

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LEARNING_CURVES = "learning_curves"
ATTRIBUTION = "attribution"
ALIGNMENT_HEADING = "Alignment of first-layer weights with the data"

VARIANT_DESCRIPTIONS = {
    "scratch": "every layer freshly initialized: the baseline.",
    "pretrained": "the first k layers copied from the random-label network, each kernel "
                  "rescaled to the norm of a fresh initialization, so that what transfers "
                  "is the direction of the weights, not their growth during pretraining.",
    "no_rescaling": "the first k layers copied from the random-label network as they are.",
    "covariance": "the first k layers drawn afresh from a Gaussian with the covariance of "
                  "the pretrained filters: does the filters' covariance alone explain the "
                  "transfer?",
}
_VARIANT_KEYS = ("variant", "transfer_layers", "seeds", "curve", "steps_to_target",
                 "speedup_over_scratch", "final_test_accuracy")
_CURVE_KEYS = ("step", "accuracy_mean", "accuracy_ci95", "loss_mean", "loss_ci95")
_RESULTS_HINT = " results.json is written by the analyze stage: rerun --stages=analyze."
_FIGURE_NAME = re.compile(r"[A-Za-z0-9_-]+")
_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f2f2f2; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
figure img { max-width: 100%; }
figcaption { color: #555; font-size: 0.92em; }
"""

FigureSource = Union[Figure, bytes]


def _text(value) -> str:
  """HTML-escaped text of any value."""
  return html.escape(str(value), quote=True)


def _percent(fraction: Optional[float]) -> str:
  return "n/a" if fraction is None else f"{100 * fraction:.1f}%"


def _require(mapping, keys: Sequence[str], where: str, hint: str = "") -> None:
  """Raises a ValueError naming the first of `keys` missing from `mapping`."""
  if not isinstance(mapping, Mapping):
    raise ValueError(f"{where} must be a dict, got {type(mapping).__name__}.{hint}")
  for key in keys:
    if key not in mapping:
      raise ValueError(f"{where} is missing {key!r}.{hint}")


def _ordered_variants(results: Mapping) -> Dict[str, Mapping]:
  """The variants, validated, with `scratch` first and the others in their given order."""
  _require(results, ("config", "target_accuracy", "pretrain", "variants"), "results",
           _RESULTS_HINT)
  variants = results["variants"]
  if not isinstance(variants, Mapping):
    raise ValueError("results['variants'] must map run names to their results.")
  for name, entry in variants.items():
    _require(entry, _VARIANT_KEYS, f"results['variants'][{name!r}]", _RESULTS_HINT)
    _require(entry["curve"], _CURVE_KEYS, f"results['variants'][{name!r}]['curve']",
             _RESULTS_HINT)
  return dict(sorted(variants.items(), key=lambda item: item[0] != "scratch"))


def _png(figure: Figure) -> bytes:
  buffer = BytesIO()
  figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
  return buffer.getvalue()


def _new_figure(width: float, height: float) -> Figure:
  figure = Figure(figsize=(width, height))
  FigureCanvasAgg(figure)
  return figure


def _learning_curve_figure(variants: Mapping[str, Mapping], target: float) -> Figure:
  """Train accuracy and loss against steps: mean over seeds and its 95% band."""
  figure = _new_figure(11, 4)
  accuracy_axes, loss_axes = figure.subplots(1, 2)
  colors = [f"C{i % 10}" for i in range(len(variants))]
  for (name, entry), color in zip(variants.items(), colors):
    curve = entry["curve"]
    steps = np.asarray(curve["step"], dtype=np.float64)
    for axes, metric in ((accuracy_axes, "accuracy"), (loss_axes, "loss")):
      mean = np.asarray(curve[f"{metric}_mean"], dtype=np.float64)
      half_width = np.asarray(curve[f"{metric}_ci95"], dtype=np.float64)
      axes.plot(steps, mean, color=color, label=f"{name} ({len(entry['seeds'])} seeds)")
      # Loss is drawn on a log scale (an early spike would flatten the rest), so its
      # band is clipped above zero.
      lower = mean - half_width if metric == "accuracy" else np.maximum(mean - half_width,
                                                                        1e-3)
      axes.fill_between(steps, lower, mean + half_width, color=color, alpha=0.2, linewidth=0)
  accuracy_axes.axhline(target, color="black", linestyle="--", linewidth=1,
                        label=f"target accuracy {target:g}")
  accuracy_axes.set(xlabel="iteration (finetuning step)", ylabel="train accuracy",
                    title="Train accuracy", ylim=(0, 1.02))
  loss_axes.set(xlabel="iteration (finetuning step)", ylabel="train loss (cross-entropy)",
                title="Train loss", yscale="log")
  for axes in (accuracy_axes, loss_axes):
    axes.grid(alpha=0.3)
  accuracy_axes.legend(loc="lower right", fontsize="small")
  return figure


def _checked_attribution(attribution: Mapping) -> Tuple[np.ndarray, Dict[str, Mapping]]:
  """Validates the attribution dict; returns uint8 images and the maps, scratch first."""
  _require(attribution, ("images", "labels", "maps"), "attribution")
  images = np.asarray(attribution["images"])
  if (images.ndim != 4 or images.shape[0] == 0 or images.shape[-1] not in (1, 3)
      or not np.issubdtype(images.dtype, np.integer) or images.min() < 0
      or images.max() > 255):
    raise ValueError(f"attribution['images'] must be uint8 [n, H, W, 1 or 3] with n >= 1, got "
                     f"{images.dtype} {images.shape}.")
  if len(attribution["labels"]) != images.shape[0]:
    raise ValueError(f"attribution['labels'] must hold one label per image "
                     f"({images.shape[0]}), got {len(attribution['labels'])}.")
  maps = attribution["maps"]
  if not isinstance(maps, Mapping) or not maps:
    raise ValueError("attribution['maps'] must map at least one model (e.g. 'scratch') to "
                     "its {'saliency', 'gradcam++'} maps.")
  for model_name, model_maps in maps.items():
    _require(model_maps, ("saliency", "gradcam++"), f"attribution['maps'][{model_name!r}]")
    for kind in ("saliency", "gradcam++"):
      if np.shape(model_maps[kind]) != images.shape[:3]:
        raise ValueError(f"attribution['maps'][{model_name!r}][{kind!r}] must have shape "
                         f"{images.shape[:3]} (one [H, W] map per image), got "
                         f"{np.shape(model_maps[kind])}.")
  return images.astype(np.uint8), dict(sorted(maps.items(), key=lambda m: m[0] != "scratch"))


def _attribution_figure(images: np.ndarray, labels: Sequence[int],
                        class_names: Optional[Sequence[str]],
                        maps: Mapping[str, Mapping]) -> Figure:
  """Rows: test images; columns: the image, then SmoothGrad and Grad-CAM++ per model."""
  columns = 1 + 2 * len(maps)
  figure = _new_figure(1.7 * columns, 1.8 * len(images))
  grid = figure.subplots(len(images), columns, squeeze=False)
  shown = images[..., 0] if images.shape[-1] == 1 else images
  image_cmap = "gray" if images.shape[-1] == 1 else None
  for row, (image, label) in enumerate(zip(shown, labels)):
    label = int(label)
    name = class_names[label] if class_names else f"class {label}"
    grid[row, 0].imshow(image, cmap=image_cmap, interpolation="nearest")
    grid[row, 0].set_ylabel(name)
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


def _png_of(name: str, source: FigureSource) -> bytes:
  """PNG bytes of a matplotlib Figure, or `source` itself if it is PNG bytes."""
  if isinstance(source, bytes):
    if not source.startswith(PNG_SIGNATURE):
      raise ValueError(f"alignment_figures[{name!r}]: bytes must be a PNG file (start with "
                       "the PNG signature).")
    return source
  if not hasattr(source, "savefig"):
    raise ValueError(f"alignment_figures[{name!r}]: expected a matplotlib Figure or PNG "
                     f"bytes, got {type(source).__name__}.")
  return _png(source)


def _figure_html(workdir: str, name: str, png: bytes, caption: str) -> str:
  """Saves `png` as figures/NAME.png and returns a <figure> that embeds it."""
  io.atomic_write(os.path.join(workdir, "figures", f"{name}.png"), png)
  encoded = base64.b64encode(png).decode("ascii")
  return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{_text(name)}">'
          f"<figcaption>{_text(caption)}</figcaption></figure>")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]],
           numeric: Sequence[int] = ()) -> str:
  """An HTML table of already-escaped cells; columns in `numeric` align right."""
  head = "".join(f"<th>{cell}</th>" for cell in header)
  body = "".join(
      "<tr>" + "".join(f'<td class="number">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
                       for i, cell in enumerate(row)) + "</tr>" for row in rows)
  return f"<table><tr>{head}</tr>{body}</table>"


def _config_value(value) -> str:
  return value if isinstance(value, str) else json.dumps(value, default=str)


def _steps_cell(steps_to_target: Mapping) -> str:
  per_seed = list(steps_to_target.get("per_seed") or [])
  detail = "; ".join("not reached" if s is None else f"{s:,}" for s in per_seed)
  if steps_to_target["mean"] is None:
    missed = sum(s is None for s in per_seed)
    text = f"not reached (by {missed} of {len(per_seed)} seeds)" if per_seed else "not reached"
  else:
    text = f"{steps_to_target['mean']:,.0f}"
    if len(per_seed) > 1:
      text += f" (per seed: {detail})"
  return _text(text)


def _speedup_cell(entry: Mapping, scratch: Optional[Mapping]) -> str:
  speedup = entry["speedup_over_scratch"]
  if speedup is not None:
    return _text(f"{speedup:.2f}×")
  if scratch is None:
    return _text("n/a (no scratch run)")
  if scratch["steps_to_target"]["mean"] is None:
    return _text("not reached by scratch")
  return _text("not reached")


def _accuracy_cell(final: Mapping) -> str:
  return _text(f"{_percent(final['mean'])} ± {_percent(final['ci95'])}")


def _speedup_table(variants: Mapping[str, Mapping]) -> str:
  scratch = variants.get("scratch")
  rows = [[_text(name), _text(entry["variant"]), _text(entry["transfer_layers"]),
           _text(f"{len(entry['seeds'])} ({', '.join(map(str, entry['seeds']))})"),
           _steps_cell(entry["steps_to_target"]), _speedup_cell(entry, scratch),
           _accuracy_cell(entry["final_test_accuracy"])]
          for name, entry in variants.items()]
  return _table(["run", "variant", "transfer layers", "seeds", "steps to target (mean)",
                 "speed-up over scratch", "final test accuracy (mean ± 95% CI)"],
                rows, numeric=(2, 4, 5, 6))


def _paragraph(text: str) -> str:
  return f"<p>{_text(text)}</p>"


def _introduction(variants: Mapping[str, Mapping]) -> str:
  kinds = dict.fromkeys(entry["variant"] for entry in variants.values())
  items = "".join(f"<li><b>{_text(kind)}</b>: "
                  f"{_text(VARIANT_DESCRIPTIONS.get(kind, 'a variant defined by the run.'))}</li>"
                  for kind in kinds)
  return (_paragraph(
      "This report reproduces the transfer experiment of Maennel et al., \"What Do Neural "
      "Networks Learn When Trained With Random Labels?\" (NeurIPS 2020). A network is first "
      "trained on images whose labels were replaced at random (pretraining). Its first k "
      "layers are then copied into a fresh network that is trained with the true labels on "
      "a disjoint downstream set (finetuning). If pretraining taught those layers something "
      "about the images themselves, the finetuned network learns faster than one trained "
      "from scratch. Each variant is finetuned with several seeds; runs are named "
      "VARIANT_kK, K the number of transferred layers.")
          + f"<ul>{items}</ul>")


def _pretrain_section(pretrain: Mapping) -> str:
  steps = pretrain.get("steps")
  rows = [[_text("steps"), _text("n/a" if steps is None else f"{steps:,}")],
          [_text("final train accuracy"), _text(_percent(pretrain.get("final_train_accuracy")))],
          [_text("realized label noise"), _text(_percent(pretrain.get("realized_label_noise")))]]
  return ("<h2>Pretraining on random labels</h2>" + _paragraph(
      "The realized label noise is the share of pretraining examples whose random label "
      "differs from the true one. A final train accuracy far above chance means the network "
      "memorized the random labels.") + _table(["", "value"], rows, numeric=(1,)))


def _checked_alignment_figures(alignment_figures: Optional[Mapping]
                               ) -> Dict[str, Tuple[str, bytes]]:
  """Validates name -> (caption, Figure or PNG bytes); returns name -> (caption, PNG)."""
  if alignment_figures is None:
    return {}
  if not isinstance(alignment_figures, Mapping):
    raise ValueError("alignment_figures must be a dict name -> (caption, Figure or PNG bytes).")
  checked = {}
  for name, value in alignment_figures.items():
    if not (isinstance(name, str) and _FIGURE_NAME.fullmatch(name)) or name in (
        LEARNING_CURVES, ATTRIBUTION):
      raise ValueError(f"alignment_figures: name {name!r} must be letters, digits, '_' or '-' "
                       f"and not {LEARNING_CURVES!r} or {ATTRIBUTION!r}; it names "
                       "figures/NAME.png.")
    if not (isinstance(value, tuple) and len(value) == 2):
      raise ValueError(f"alignment_figures[{name!r}] must be a (caption, Figure or PNG bytes) "
                       "pair.")
    caption, source = value
    checked[name] = (caption, _png_of(name, source))
  return checked


def write_report(workdir: str, results: Mapping, attribution: Optional[Mapping] = None,
                 alignment_figures: Optional[Mapping[str, Tuple[str, FigureSource]]] = None
                 ) -> str:
  """Renders the experiment's results into `<workdir>/report.html`.

  Args:
    workdir: the run's folder (local, gs:// or ram://).
    results: the analyze stage's results.json: "config" (flag -> value),
      "target_accuracy", "pretrain" ({"steps", "final_train_accuracy",
      "realized_label_noise"}, each may be None) and "variants" (run name ->
      {"variant", "transfer_layers", "seeds", "curve" (`curves.learning_curves`),
      "steps_to_target" {"per_seed", "mean"}, "speedup_over_scratch",
      "final_test_accuracy" {"per_seed", "mean", "ci95"}}).
    attribution: optional {"images": uint8 [n, H, W, 3 or 1], "labels": n ints,
      "class_names": list of str or None, "maps": model name -> {"saliency": [n, H, W],
      "gradcam++": [n, H, W]} with values in [0, 1]}; `scratch` is shown first.
    alignment_figures: optional name -> (caption, matplotlib Figure or PNG bytes), shown
      in order under "Alignment of first-layer weights with the data". Figures are not
      closed: the caller owns them.

  Returns:
    The path of report.html. Each figure is also written to `<workdir>/figures/NAME.png`
    (learning_curves, attribution, and the names of `alignment_figures`).
  """
  variants = _ordered_variants(results)
  attribution_maps = None if attribution is None else _checked_attribution(attribution)
  alignment_pngs = _checked_alignment_figures(alignment_figures)
  target = results["target_accuracy"]
  log_every = results["config"].get("log_every")
  interval = f" every {log_every} steps" if log_every else ""
  body = [f"<h1>{_text('What the networks learned')}</h1>"]
  if variants:
    body.append(_introduction(variants))
  body += ["<h2>Configuration</h2>",
           _paragraph("The flags of the run (pipelines/run.py) that produced these results."),
           _table(["flag", "value"], [[_text(key), _text(_config_value(value))]
                                      for key, value in sorted(results["config"].items())])]
  if results["pretrain"].get("steps") is not None:
    body.append(_pretrain_section(results["pretrain"]))
  if variants:
    body += [
        "<h2>Learning curves</h2>",
        _figure_html(workdir, LEARNING_CURVES,
                     _png(_learning_curve_figure(variants, target)),
                     f"Train accuracy (left) and train loss (right) during finetuning, one "
                     f"line per run: the mean over seeds, with the shaded band its 95% "
                     f"confidence interval (Student t; no band for a single seed). The "
                     f"dashed line is the target accuracy {target:g}. A curve that rises "
                     f"earlier than scratch means the transferred layers speed up "
                     f"learning. Accuracy is the mean over the steps since the previous "
                     f"record, logged{interval}."),
        "<h2>Speed-up</h2>",
        _paragraph(f"Steps to target is the first logged step at which a run's train "
                   f"accuracy reaches {target:g}, accurate to the logging interval. The "
                   f"speed-up is the mean steps to target of scratch divided by that of "
                   f"the run: above 1 the run reaches the target in fewer steps than "
                   f"training from scratch, below 1 it is slower. 'not reached' means at "
                   f"least one seed never reached the target, so no mean exists. Final "
                   f"test accuracy is measured on the held-out split at the end of "
                   f"finetuning."),
        _speedup_table(variants)]
  if attribution_maps is not None:
    images, maps = attribution_maps
    figure = _attribution_figure(images, attribution["labels"],
                                 attribution.get("class_names"), maps)
    body += ["<h2>Attribution maps</h2>",
             _figure_html(workdir, ATTRIBUTION, _png(figure),
                          f"Each row is a test image, labelled with its true class. For "
                          f"each model ({' and '.join(maps)}), SmoothGrad shows how strongly "
                          f"each pixel changes the logit of that class (bright = strong) and "
                          f"Grad-CAM++ overlays a heat map (red = high) of the regions of the "
                          f"last convolutional feature maps that speak for it. Maps are "
                          f"normalized per image to [0, 1]; compare where the models look, "
                          f"not the absolute values.")]
  if alignment_pngs:
    body.append(f"<h2>{_text(ALIGNMENT_HEADING)}</h2>")
    body += [_figure_html(workdir, name, png, caption)
             for name, (caption, png) in alignment_pngs.items()]
  page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          f"<title>{_text('tfrandlabels report')}</title><style>{_STYLE}</style></head>"
          f"<body>{''.join(body)}</body></html>\n")
  path = os.path.join(workdir, "report.html")
  io.atomic_write(path, page)
  return path
