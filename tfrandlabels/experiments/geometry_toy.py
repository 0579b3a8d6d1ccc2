"""Input-space geometry on 2-D toy tasks (Zavatone-Veth et al., 2023): does training
magnify the volume element of a network's feature map near its decision boundary?

  python pipelines/run.py --flagfile=geometry_toy.cfg

Each run trains an `ntk_mlp` (weights and biases N(0, 1), the affine output of every
layer after the first scaled by 1/sqrt(fan-in), all in float64) with cross-entropy and
SGD with momentum --momentum, in batches of min(--batch_size, examples), on the
project's trainer, so a killed run resumes:

  xor            the four XOR points (one batch); one hidden layer of --geometry_width
                 sigmoid units; --geometry_xor_learning_rate, weight decay
                 --geometry_xor_weight_decay, --geometry_xor_steps steps.
  sinusoid       --geometry_samples points uniform in [-1, 1]^2, label 1 above
                 x2 = 0.6 sin(7 x1 - 1) (`data.synthetic.sinusoid`); the same net;
                 --geometry_sinusoid_learning_rate, --geometry_sinusoid_steps.
  sinusoid_deep  the sinusoid task with sigmoid hidden layers --geometry_deep_widths,
                 the same learning rate, --geometry_deep_steps.

The weight decay is the trainer's, decoupled (w <- w - lr * wd * w per step); the
reference code's PyTorch SGD adds wd * w to the gradient instead, which momentum
amplifies tenfold. At the XOR setting either shrinks the weights by under 5%.

The analyze stage evaluates every net at initialization (rebuilt from its seed) and
after training on a grid over [-E, E]^2 (E = --volume_grid_extent, --volume_resolution
points per axis: the `volume_element` analysis's flags, and its functions): the
predicted class, the prediction entropy and, for every hidden layer's feature map,
sqrt(det g) exactly. The magnification measure of the last hidden layer
(`geometry.magnification`), at initialization and after training, goes to
results/geometry_toy.json; the report draws the heat maps with the decision
boundaries. The trained nets are also models for `--analyses=volume_element`.
"""
import dataclasses
import functools
import os
from typing import Tuple

from absl import flags
from absl import logging
import numpy as np

from tfrandlabels import data
from tfrandlabels import models
from tfrandlabels.analyses import volume_element
from tfrandlabels.analyses.registry import AnalysisData
from tfrandlabels.data import synthetic
from tfrandlabels.experiments import registry
from tfrandlabels.pipeline import artifacts
from tfrandlabels.pipeline import flags as flag_lib
from tfrandlabels.pipeline import plots
from tfrandlabels.pipeline import report
from tfrandlabels.pipeline import results
from tfrandlabels.pipeline.stage import Stage
from tfrandlabels.training import trainer

flags.DEFINE_integer("geometry_width", 250, "Hidden units of the xor and sinusoid nets.")
flags.DEFINE_list("geometry_deep_widths", ["8", "8", "8"], "Hidden layer widths of the "
                  "sinusoid_deep net, first to last.")
flags.DEFINE_integer("geometry_samples", 400, "Points of the sinusoid task.")
flags.DEFINE_integer("geometry_seed", 0, "Seed of the sinusoid points, the initialization "
                     "and the batch order.")
flags.DEFINE_integer("geometry_xor_steps", 2000, "Training steps of the xor net.")
flags.DEFINE_float("geometry_xor_learning_rate", 0.02, "Learning rate of the xor net.")
flags.DEFINE_float("geometry_xor_weight_decay", 1e-4, "Weight decay of the xor net.")
flags.DEFINE_integer("geometry_sinusoid_steps", 2000, "Training steps of the sinusoid net.")
flags.DEFINE_float("geometry_sinusoid_learning_rate", 0.1, "Learning rate of both sinusoid "
                   "nets.")
flags.DEFINE_integer("geometry_deep_steps", 20000, "Training steps of the sinusoid_deep net.")
flag_lib.check_at_least(("geometry_width", "geometry_samples", "geometry_xor_steps",
                         "geometry_sinusoid_steps", "geometry_deep_steps"), 1)
flag_lib.check_int_list("geometry_deep_widths", 1)
for _name in ("geometry_xor_learning_rate", "geometry_sinusoid_learning_rate"):
  flag_lib.check(_name, lambda v: v > 0, "must be > 0")
flag_lib.check("geometry_xor_weight_decay", lambda v: v >= 0, "must be >= 0")

OWN_FLAGS = ("geometry_width", "geometry_deep_widths", "geometry_samples", "geometry_seed",
             "geometry_xor_steps", "geometry_xor_learning_rate", "geometry_xor_weight_decay",
             "geometry_sinusoid_steps", "geometry_sinusoid_learning_rate",
             "geometry_deep_steps")
TRAIN_READS = ("batch_size", "momentum", "steps_per_loop", "log_every", "checkpoint_every",
               *OWN_FLAGS)
ANALYZE_READS = ("volume_resolution", "volume_grid_extent")
STATES = ("initialization", "trained")
TRAIN_DIR = os.path.join("geometry_toy", "train")
MAPS_DIR = os.path.join("geometry_toy", "maps")
NUM_CLASSES = 2


@dataclasses.dataclass(frozen=True)
class Run:
  """One net trained on one task."""
  name: str
  task: str
  widths: Tuple[int, ...]
  steps: int
  learning_rate: float
  weight_decay: float


def runs(cfg):
  """The runs: xor, sinusoid, sinusoid_deep."""
  shallow = (cfg.geometry_width,)
  return (Run("xor", "xor", shallow, cfg.geometry_xor_steps, cfg.geometry_xor_learning_rate,
              cfg.geometry_xor_weight_decay),
          Run("sinusoid", "sinusoid", shallow, cfg.geometry_sinusoid_steps,
              cfg.geometry_sinusoid_learning_rate, 0.0),
          Run("sinusoid_deep", "sinusoid", tuple(cfg.geometry_deep_widths),
              cfg.geometry_deep_steps, cfg.geometry_sinusoid_learning_rate, 0.0))


def _source(cfg, task):
  """fn() -> the task's tf.data.Dataset, and its number of examples."""
  if task == "xor":
    return synthetic.xor, 4
  return (functools.partial(synthetic.sinusoid, cfg.geometry_samples, cfg.geometry_seed),
          cfg.geometry_samples)


def _batch_size(cfg, run):
  return min(cfg.batch_size, _source(cfg, run.task)[1])


def _build(cfg, run):
  return models.build_model("ntk_mlp", NUM_CLASSES, (2,), widths=run.widths,
                            seed=cfg.geometry_seed)


def _folder(ctx, run):
  return ctx.path(TRAIN_DIR, run.name)


def _trained(ctx, run):
  return trainer.load_weights(_build(ctx.cfg, run), _folder(ctx, run))


def train(ctx):
  """Trains each run's net (or resumes it; a finished run is skipped)."""
  cfg = ctx.cfg
  for run in runs(cfg):
    folder = _folder(ctx, run)
    if artifacts.is_done(folder):
      logging.info("geometry_toy: %s already done; skipping", run.name)
      continue
    source, _ = _source(cfg, run.task)
    batch_size = _batch_size(cfg, run)
    logging.info("geometry_toy: %s -> %s", run.name, folder)
    _, record = trainer.train(
        model_fn=lambda run=run: _build(cfg, run),
        train_input=lambda start, source=source, batch_size=batch_size: data.make_input_fn(
            source, global_batch_size=batch_size, training=True, seed=cfg.geometry_seed,
            start_step=start),
        config=trainer.TrainConfig(
            steps=run.steps, batch_size=batch_size, optimizer="sgd",
            learning_rate=run.learning_rate, momentum=cfg.momentum,
            weight_decay=run.weight_decay, deterministic=cfg.deterministic,
            seed=cfg.geometry_seed, steps_per_loop=cfg.steps_per_loop,
            log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every),
        strategy=ctx.strategy, model_dir=folder)
    if ctx.chief:
      artifacts.mark_done(folder, record)


def _examples(cfg, task):
  """The task's (inputs [N, 2], labels [N]) as numpy arrays."""
  source, count = _source(cfg, task)
  batch = next(source().batch(count).as_numpy_iterator())
  return batch["image"], batch["label"]


def _evaluate(cfg, model, run, points):
  """A net's state over the grid, and its maps [2 + layers, R*R]."""
  predicted, entropy = volume_element.predictions(model, points, cfg.volume_batch)
  inputs, labels = _examples(cfg, run.task)
  layers, maps = [], [predicted, entropy]
  for index, width in enumerate(run.widths):
    name = f"act{index + 1}"
    log10_volume, num_zero = volume_element.log_volumes(
        volume_element.feature_model(model, name), points, inputs_per_pass=cfg.volume_batch,
        chunk_size=cfg.volume_chunk)
    layers.append({"layer": name, "width": width,
                   "volume": volume_element.summary(log10_volume, num_zero, entropy)})
    maps.append(log10_volume)
  accuracy = float(np.mean(
      volume_element.predictions(model, inputs, cfg.volume_batch)[0] == labels))
  return {"train_accuracy": accuracy, "layers": layers}, np.stack(maps)


def analyze(ctx):
  """Each net at initialization and trained, over the grid -> results/geometry_toy.json."""
  cfg = ctx.cfg
  resolution = cfg.volume_resolution
  points = volume_element.grid_2d(cfg.volume_grid_extent, resolution)
  payload = {"grid_extent": cfg.volume_grid_extent, "resolution": resolution, "runs": {}}
  for run in runs(cfg):
    states, maps = {}, {}
    for state, model in zip(STATES, (_build(cfg, run), _trained(ctx, run))):
      states[state], maps[state] = _evaluate(cfg, model, run, points)
      states[state]["maps"] = os.path.join(MAPS_DIR, f"{run.name}-{state}.npy")
      if ctx.chief:
        artifacts.save_array(ctx.path(states[state]["maps"]),
                             maps[state].reshape(-1, resolution, resolution))
      logging.info("geometry_toy: %s at %s: %s", run.name, state,
                   states[state]["layers"][-1]["volume"])
    payload["runs"][run.name] = {
        "task": run.task, "widths": list(run.widths), "steps": run.steps,
        "batch_size": _batch_size(cfg, run), "learning_rate": run.learning_rate,
        "weight_decay": run.weight_decay, "states": states,
        # Rows of the maps: predicted class, entropy, then each layer's log volume.
        "initial_volume_trained_entropy": volume_element.magnification(
            maps["initialization"][-1], maps["trained"][1])}
  if ctx.chief:
    results.write(cfg.workdir, kind="experiment", name="geometry_toy",
                  config={n: getattr(cfg, n) for n in OWN_FLAGS + ANALYZE_READS},
                  payload=payload)


def _cell(workdir, state, layer, points):
  """A heat-map cell (see `plots.volume_heat_maps`) of one layer's map in `state`."""
  maps = artifacts.load_array(os.path.join(workdir, state["maps"]))
  return {"predicted": maps[0], "log10_volume": maps[2 + layer], **points}


def _change(run, name):
  """Whether both measures of a run's last layer rose in training, and their numbers."""
  before, after = (run["states"][state]["layers"][-1]["volume"] for state in STATES)
  control = run["initial_volume_trained_entropy"]
  keys = ("rank_correlation", "volume_ratio")
  rises = all(before[key] is not None and after[key] is not None and after[key] > before[key]
              for key in keys)
  rank, ratio = ([volume_element.formatted(measures[key], ".2f")
                  for measures in (before, after, control)] for key in keys)
  return rises, (f"{name} rank correlation {rank[0]} -> {rank[1]}, volume ratio {ratio[0]} "
                 f"-> {ratio[1]} (control, the initial geometry under the trained "
                 f"predictions: {rank[2]}, {ratio[2]})")


def _rows(name, run):
  """The table rows of a run: its last layer at initialization, trained, and the control."""
  widths = "/".join(map(str, run["widths"]))

  def measures(volume):
    return [volume_element.formatted(volume["rank_correlation"], ".3f"),
            volume_element.formatted(volume["volume_ratio"], ".3g")]

  rows = []
  for state in STATES:
    entry = run["states"][state]
    volume = entry["layers"][-1]["volume"]
    rows.append([name, widths, state, f"{entry['train_accuracy']:.1%}", *measures(volume),
                 f"{volume['log10_volume']['median']:.2f}"])
  control = run["initial_volume_trained_entropy"]
  return rows + [[name, widths, "control: initial volume, trained entropy", "",
                  *measures(control), ""]]


def _figures(cfg, payload):
  """The heat maps: nets of one hidden layer side by side, one figure per deeper net."""
  extent, shallow, figures = payload["grid_extent"], {}, []
  for name, run in payload["runs"].items():
    inputs, labels = _examples(cfg, run["task"])
    points = {"points": inputs, "labels": labels}
    if len(run["widths"]) == 1:
      shallow[name] = {state: _cell(cfg.workdir, run["states"][state], 0, points)
                       for state in STATES}
      continue
    cells = {state: {f"layer {i + 1} ({width} units)": _cell(
        cfg.workdir, run["states"][state], i, points) for i, width in enumerate(run["widths"])}
             for state in STATES}
    figures.append(report.Plot(
        name=f"geometry_toy/{name}",
        png=report.figure_png(plots.volume_heat_maps(cells, extent)),
        caption=f"{name}: log10 sqrt(det g) of each hidden layer's feature map over "
                f"[-{extent:g}, {extent:g}]^2 at initialization (top) and after "
                f"{run['steps']:,} steps (bottom), the network's decision boundary in "
                "white, the training points coloured by class."))
  if shallow:
    figures.insert(0, report.Plot(
        name="geometry_toy/shallow",
        png=report.figure_png(plots.volume_heat_maps(shallow, extent)),
        caption=f"log10 sqrt(det g), the volume element of the hidden layer's feature map, "
                f"over [-{extent:g}, {extent:g}]^2 at initialization and after training, "
                "with the network's decision boundary in white and the training points "
                "coloured by class. At initialization the volume element is nearly "
                "radially symmetric; training is predicted to magnify it along the "
                "boundary."))
  return figures


def sections(ctx, envelope):
  payload = envelope["payload"]
  changes = [_change(run, name) for name, run in payload["runs"].items()]
  summary = (f"Input-space geometry on toy tasks: training raised both magnification "
             f"measures of the last hidden layer in {sum(r for r, _ in changes)} of "
             f"{len(changes)} nets: {'; '.join(text for _, text in changes)}.")
  intro = ("The magnification measure over the grid, for the last hidden layer: the rank "
           "correlation between log10 sqrt(det g) and the prediction entropy, and the mean "
           "volume element over the 10% most uncertain grid points divided by that over "
           "the 50% most certain (1: no magnification near the boundary). The control row "
           "scores the volume element at initialization against the trained net's "
           "entropy: what the measures would show if training only moved the decision "
           "boundary, leaving the geometry as it was.")
  table = report.Table(
      header=["net", "hidden widths", "state", "train accuracy", "rank correlation",
              "volume ratio", "median log10 volume"],
      rows=[row for name, run in payload["runs"].items() for row in _rows(name, run)],
      numeric=(3, 4, 5, 6))
  return [report.Section(title="Input-space geometry on toy tasks", summary=[summary],
                         blocks=[intro, table, *_figures(ctx.cfg, payload)])]


def analysis_data(ctx):
  """The sinusoid points: analyses on these 2-D nets read a grid, not the data."""
  cfg = ctx.cfg
  return AnalysisData(dataset="sinusoid", split="train", source=_source(cfg, "sinusoid")[0],
                      batch_ops=(), batch_size=cfg.batch_size, num_classes=NUM_CLASSES)


EXPERIMENT = registry.register(registry.Experiment(
    name="geometry_toy",
    title="How training shapes the input-space geometry of toy networks",
    flags=(*TRAIN_READS, *ANALYZE_READS, "volume_batch", "volume_chunk"),
    int_lists=("geometry_deep_widths",),
    stages=lambda cfg: [
        Stage("train", "train", train, reads=TRAIN_READS, outputs=(TRAIN_DIR,), trains=True),
        Stage("analyze", "analyze", analyze, reads=ANALYZE_READS, after=("train",),
              outputs=(os.path.join(results.RESULTS_DIR, "geometry_toy.json"), MAPS_DIR))],
    check=lambda cfg: None, sections=sections,
    models=lambda cfg: {run.name: registry.ModelSource(
        "train", lambda ctx, run=run: _trained(ctx, run)) for run in runs(cfg)},
    analysis_models=lambda cfg, analysis: tuple(run.name for run in runs(cfg)),
    analysis_data=analysis_data, data_flags=("geometry_samples", "geometry_seed")))
