"""Experiment `frequency_shortcuts`: which frequencies a network classifies with, in
which order it learns them, and whether they act as shortcuts ("What do neural
networks learn in image classification? A frequency shortcut perspective", Wang et
al., ICCV 2023).

One model is trained per data set of `--shortcuts_datasets` (default: `--dataset`) on
`--shortcuts_train_split`. During training, every `--log_every` steps, a trainer hook
(`learning_order`) measures the accuracy on the first `--learning_order_images`
images of `--shortcuts_test_split`, low-pass and high-pass filtered at each of
`--learning_order_radii`: whichever copies gain accuracy first show the frequencies
the network learns first. Then the analyses `class_spectra`, `dominant_frequencies`
and `shortcut_test` run on every model, each on its own data set's test split.

Stages: train -> analyze (results/frequency_shortcuts.json: accuracies and the
learning order) -> the analyses -> report. Workdir:

  train/<model>/   one training run per data set (checkpoints, history.jsonl)
  cache/           data moments (for --normalize=standardize)

A model is named by its data set, with every character other than a letter, digit,
'_' or '-' replaced by '_' (`planted_high`, `cifar10`).
"""
import dataclasses
import functools
import os
import re
import types

from absl import flags
from absl import logging
import numpy as np

from tfrandlabels import data
from tfrandlabels import io
from tfrandlabels.analyses import class_spectra
from tfrandlabels.analyses.registry import AnalysisData
from tfrandlabels.analysis import curves
from tfrandlabels.data import planted
from tfrandlabels.errors import ConfigError
from tfrandlabels.experiments import common
from tfrandlabels.experiments import registry
from tfrandlabels.pipeline import artifacts
from tfrandlabels.pipeline import flags as flag_lib
from tfrandlabels.pipeline import frequency_plots
from tfrandlabels.pipeline import report
from tfrandlabels.pipeline import results
from tfrandlabels.pipeline.context import Context
from tfrandlabels.pipeline.stage import Stage
from tfrandlabels.training import hooks
from tfrandlabels.training import trainer

flags.DEFINE_list("shortcuts_datasets", [], "frequency_shortcuts: data sets to train one "
                  "model on each (load() names); default: --dataset.")
flags.DEFINE_string("shortcuts_train_split", "train", "frequency_shortcuts: training split.")
flags.DEFINE_string("shortcuts_test_split", "test", "frequency_shortcuts: held-out split for "
                    "test accuracy, the learning order and the analyses.")
flags.DEFINE_integer("shortcuts_steps", 1000, "frequency_shortcuts: training steps per model.")
flags.DEFINE_integer("shortcuts_seed", 0, "frequency_shortcuts: seed of the initialization "
                     "and the data order.")
flags.DEFINE_list("learning_order_radii", ["4", "8", "12"], "frequency_shortcuts: radii R "
                  "(cycles per image) of the low_pass:R and high_pass:R test copies whose "
                  "accuracy is tracked during training.")
flags.DEFINE_integer("learning_order_images", 500, "frequency_shortcuts: test images (the "
                     "first ones of the split) the learning order is measured on.")


def radii(values):
  """The radii of --learning_order_radii as floats, or None if one is not a number > 0."""
  try:
    numbers = [float(v) for v in values]
  except (TypeError, ValueError):
    return None
  return numbers if numbers and all(0 < n < np.inf for n in numbers) else None


for _name in ("shortcuts_train_split", "shortcuts_test_split"):
  flag_lib.check_split(_name)
flag_lib.check("shortcuts_datasets", all, "must be a comma list of data set names without "
               "empty entries")
flag_lib.check("learning_order_radii", lambda v: radii(v) is not None,
               "must be a non-empty comma list of radii > 0, e.g. 4,8,12")
flag_lib.check_at_least(("shortcuts_steps", "learning_order_images"), 1)

OWN_FLAGS = ("shortcuts_datasets", "shortcuts_train_split", "shortcuts_test_split",
             "shortcuts_steps", "shortcuts_seed", "learning_order_radii",
             "learning_order_images")
RUNS = "shortcut_runs"  # Resolved {model name: data set}: what the stages read.
_DATA = tuple(n for n in common.DATA_FLAGS if n != "dataset")
TRAIN_READS = (*_DATA, *common.MODEL_FLAGS, *common.TRAIN_FLAGS, "nesterov", RUNS,
               "shortcuts_train_split", "shortcuts_test_split", "shortcuts_steps",
               "shortcuts_seed", "learning_order_radii", "learning_order_images")
DATA_FOR_ANALYSES = (*_DATA, RUNS, "shortcuts_train_split", "shortcuts_test_split")
LEARNING_ORDER = "learning_order"  # The hook's name: its history keys are "learning_order/...".


def runs(cfg):
  """{model name: data set} of the models to train, from --shortcuts_datasets."""
  datasets = list(dict.fromkeys(cfg.shortcuts_datasets or [cfg.dataset]))
  names = {re.sub(r"[^A-Za-z0-9_-]", "_", d): d for d in datasets}
  if len(names) != len(datasets):
    raise ConfigError(f"--shortcuts_datasets={','.join(datasets)}: two data sets get the same "
                      "model name (characters other than letters, digits, _ and - become _)")
  return names


def _dataset_cfg(cfg, dataset):
  """The settings of one data set's run: `cfg` with --dataset set to it."""
  return types.SimpleNamespace(**{**vars(cfg), "dataset": dataset})


def _dataset_ctx(ctx, dataset):
  return Context(_dataset_cfg(ctx.cfg, dataset), ctx.strategy, ctx.chief)


def _source(cfg, split):
  return functools.partial(data.load, cfg.dataset, split, cfg.data_dir)


def _input(ctx, split, **kwargs):
  """An input_fn over `split` of `ctx.cfg.dataset`, normalized with the training split's
  moments (`common.make_input`)."""
  return common.make_input(ctx, _source(ctx.cfg, split),
                           stats_split=ctx.cfg.shortcuts_train_split, **kwargs)


def build(cfg):
  """The model of one data set's run (`cfg.dataset`), freshly initialized."""
  return common.build(cfg, common.num_classes(cfg), cfg.shortcuts_seed,
                      common.input_shape(cfg, cfg.shortcuts_test_split))


def test_data(ctx):
  """The held-out split of `ctx.cfg.dataset` as analyses and the learning order read it."""
  cfg = ctx.cfg
  return AnalysisData(
      dataset=cfg.dataset, split=cfg.shortcuts_test_split,
      source=_source(cfg, cfg.shortcuts_test_split),
      batch_ops=common.batch_ops(ctx, training=False, stats_split=cfg.shortcuts_train_split),
      batch_size=cfg.batch_size, num_classes=common.num_classes(cfg),
      image_size=(cfg.image_size,) * 2 if cfg.image_size else None)


def filters(cfg):
  """The filter specs of the learning order: low_pass:R and high_pass:R per radius."""
  return [f"{kind}:{r:g}" for kind in ("low_pass", "high_pass")
          for r in radii(cfg.learning_order_radii)]


def check(cfg):
  """Every data set serves both splits, and the model fits its images."""
  if cfg.nesterov and cfg.optimizer != "sgd":
    raise ConfigError(f"--nesterov needs --optimizer=sgd, not {cfg.optimizer}")
  for dataset in runs(cfg).values():
    run_cfg = _dataset_cfg(cfg, dataset)
    common.check_split(run_cfg, "shortcuts_train_split", cfg.shortcuts_train_split,
                       cfg.batch_size)
    common.check_split(run_cfg, "shortcuts_test_split", cfg.shortcuts_test_split)
    try:
      build(run_cfg)
    except ValueError as e:
      raise ConfigError(f"--model={cfg.model} on {dataset}: {e}") from None


def resolve(cfg):
  setattr(cfg, RUNS, runs(cfg))
  return cfg


# --- stages ---------------------------------------------------------------------------


def train(ctx):
  """Trains one model per data set, tracking the learning order."""
  for name, dataset in runs(ctx.cfg).items():
    folder = ctx.path("train", name)
    if artifacts.is_done(folder):
      logging.info("train: %s already done; skipping", name)
      continue
    run_ctx = _dataset_ctx(ctx, dataset)
    cfg = run_ctx.cfg
    _, images, labels = test_data(run_ctx).examples(cfg.learning_order_images)
    logging.info("train: %s on %s %s -> %s", cfg.model, dataset, cfg.shortcuts_train_split,
                 folder)
    _, record = trainer.train(
        model_fn=lambda cfg=cfg: build(cfg),
        train_input=lambda start, run_ctx=run_ctx: _input(
            run_ctx, run_ctx.cfg.shortcuts_train_split, training=True,
            seed=run_ctx.cfg.shortcuts_seed, start_step=start),
        eval_input=_input(run_ctx, cfg.shortcuts_test_split, training=False),
        config=dataclasses.replace(
            common.train_config(cfg, cfg.shortcuts_steps, cfg.shortcuts_seed),
            nesterov=cfg.nesterov),
        strategy=ctx.strategy, model_dir=folder,
        hooks=[hooks.FilteredAccuracyHook(images, labels, filters(cfg), name=LEARNING_ORDER)])
    if ctx.chief:
      artifacts.mark_done(folder, record)


def learning_order(history, num_classes):
  """The learning-order curves a run's history recorded, and when each copy got halfway.

  Returns:
    A `results.LearningOrder`: `target` is halfway from chance to the final unfiltered
    accuracy; `steps_to_target` the first logged step each copy reached it (None: never).
  """
  prefix = f"{LEARNING_ORDER}/"
  tracked = [r for r in history if f"{prefix}unfiltered" in r]
  keys = [k[len(prefix):] for k in tracked[-1] if k.startswith(prefix)]
  chance = 1 / num_classes
  accuracy = {k: [r[prefix + k] for r in tracked] for k in keys}
  target = chance + 0.5 * (accuracy["unfiltered"][-1] - chance)
  return {"step": [r["step"] for r in tracked], "chance": chance, "accuracy": accuracy,
          "target": target,
          "steps_to_target": {k: curves.steps_to_target(tracked, target, key=prefix + k)
                              for k in keys}}


def analyze(ctx):
  """Accuracies and learning order of every model -> results/frequency_shortcuts.json."""
  cfg = ctx.cfg
  payload = {"runs": {}}
  for name, dataset in runs(cfg).items():
    folder = ctx.path("train", name)
    summary = artifacts.done_summary(folder)
    classes = common.num_classes(_dataset_cfg(cfg, dataset))
    payload["runs"][name] = {
        "dataset": dataset, "steps": summary["step"],
        "final_train_accuracy": summary["accuracy"], "test_accuracy": summary["eval_accuracy"],
        "planted_band": (list(planted.BANDS[dataset[len("planted_"):]])
                         if dataset in class_spectra.PLANTED else None),
        "learning_order": learning_order(
            io.read_jsonl(os.path.join(folder, trainer.HISTORY)), classes)}
  if ctx.chief:
    path = results.write(cfg.workdir, kind="experiment", name="frequency_shortcuts",
                         config={n: getattr(cfg, n) for n in OWN_FLAGS}, payload=payload)
    logging.info("analyze: wrote %s", path)


def stages(cfg):
  del cfg
  return [
      Stage("train", "train", train, reads=TRAIN_READS, outputs=("train",), trains=True),
      Stage("analyze", "analyze", analyze, reads=(RUNS,), after=("train",),
            outputs=(f"{results.RESULTS_DIR}/frequency_shortcuts.json",)),
  ]


# --- report ---------------------------------------------------------------------------


def order_sentence(name, run):
  """Which filtered copies of the test images the model learned first, in words."""
  order = run["learning_order"]
  steps, final = order["steps_to_target"], {k: v[-1] for k, v in order["accuracy"].items()}
  reached = sorted((s, k) for k, s in steps.items() if s is not None and k != "unfiltered")
  never = [k for k, s in steps.items() if s is None]
  label = name if name == run["dataset"] else f"{name} ({run['dataset']})"
  text = (f"{label} (test accuracy {run['test_accuracy']:.0%}): test copies reached "
          f"{order['target']:.0%} accuracy (halfway from chance) in this order: "
          + (", ".join(f"{k} at step {s}" for s, k in reached) or "none"))
  if never:
    text += "; never: " + ", ".join(f"{k} (final {final[k]:.0%})" for k in never)
  unfiltered = steps["unfiltered"]
  return text + (f" (unfiltered: step {unfiltered})." if unfiltered is not None else ".")


def sections(ctx, envelope):
  del ctx
  summary, blocks, rows = [], [], []
  for name, run in envelope["payload"]["runs"].items():
    order = run["learning_order"]
    summary.append(order_sentence(name, run))
    band = run["planted_band"]
    rows += [[name, key, f"{values[-1]:.1%}", order["steps_to_target"][key] or "never"]
             for key, values in order["accuracy"].items()]
    blocks.append(report.Plot(
        name=f"frequency_shortcuts/{name}_learning_order",
        png=report.figure_png(frequency_plots.learning_order(
            order["step"], order["accuracy"], order["chance"], name)),
        caption=f"{name}: test accuracy during training on low-pass (left: keeps radii <= R) "
                "and high-pass (right: keeps radii > R) filtered copies of the first test "
                "images (Wang et al., Sec. 4). The copies that gain accuracy first hold the "
                "frequencies the network learns first."
                + (f" The classes of {run['dataset']} differ only at radii {band[0]:g} to "
                   f"{band[1]:g}." if band else "")))
  header = ["model", "test copy", "final accuracy", "step reaching halfway"]
  blocks.append(report.Table(header=header, rows=rows, numeric=(2, 3)))
  return [report.Section(title="Learning order of frequencies", summary=summary,
                         blocks=blocks)]


# --- models and data for analyses -------------------------------------------------------


def load_model(ctx, name, dataset):
  return trainer.load_weights(build(_dataset_cfg(ctx.cfg, dataset)), ctx.path("train", name))


def model_sources(cfg):
  return {name: registry.ModelSource(
      "train", lambda ctx, name=name, dataset=dataset: load_model(ctx, name, dataset))
          for name, dataset in runs(cfg).items()}


def analysis_data(ctx):
  """Each model's own data set's held-out split (`AnalysisData.per_model`)."""
  per_model = {name: test_data(_dataset_ctx(ctx, dataset))
               for name, dataset in runs(ctx.cfg).items()}
  return dataclasses.replace(next(iter(per_model.values())), per_model=per_model)


ANALYSES = ("class_spectra", "dominant_frequencies", "shortcut_test")

EXPERIMENT = registry.register(registry.Experiment(
    name="frequency_shortcuts",
    title="What networks learn: frequency shortcuts",
    flags=(*common.DATA_FLAGS, *common.MODEL_FLAGS, *common.TRAIN_FLAGS, "nesterov",
           *OWN_FLAGS),
    stages=stages, check=check, resolve=resolve, sections=sections, models=model_sources,
    analyses=lambda cfg: {a: tuple(runs(cfg)) for a in ANALYSES},
    analysis_models=lambda cfg, analysis: tuple(runs(cfg)),
    analysis_data=analysis_data, data_flags=DATA_FOR_ANALYSES))
