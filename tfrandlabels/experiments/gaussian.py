"""Gaussian inputs with random labels (Maennel et al., NeurIPS 2020, Fig. 4 left and
Appendix E.1): what the first layer learns about the input covariance from labels
that carry no information.

Each setting trains `mlp` on x ~ N(0, diag(variance_min .. variance_max)) with labels
uniform over 10 classes, once per seed in --gaussian_seeds, and tracks the first layer's
transfer function f_i = sqrt(v_i' Sigma_w v_i) along each eigenvector v_i of Sigma_x.
The report plots f against the variance lambda_i (the paper's App. E.1 plots show the
diagonal entries 0.1 .. 3.0 on their sigma axis), as mean and spread over the seeds, and
names its shape (`analysis/shape.py`). A setting is a small flagfile of its own
(`gaussian/*.cfg`, flags --dim, --variance_min, --variance_max, --widths,
--samples), named by `--gaussian_settings`, so every value is a checked flag.

The inputs are float vectors, not images: this experiment's source is the
`synthetic.gaussian_random_labels` kind ({"image": float32 [dim], "label", "index"}),
fed to the trainer without image ops.
"""
import functools
import os

from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from tfrandlabels import data
from tfrandlabels import io
from tfrandlabels import models
from tfrandlabels.analysis import alignment
from tfrandlabels.analysis import shape
from tfrandlabels.data import synthetic
from tfrandlabels.errors import ConfigError
from tfrandlabels.experiments import common
from tfrandlabels.experiments import registry
from tfrandlabels.experiments import transfer
from tfrandlabels.pipeline import artifacts
from tfrandlabels.pipeline import flags as flag_lib
from tfrandlabels.pipeline import plots
from tfrandlabels.pipeline import report
from tfrandlabels.pipeline import results
from tfrandlabels.pipeline.stage import Stage
from tfrandlabels.training import hooks
from tfrandlabels.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLASSES = 10

flags.DEFINE_list("gaussian_settings", ["gaussian/d10_wide.cfg"],
                  "Flagfiles of the settings to train, one per setting (see gaussian/).")
flags.DEFINE_integer("gaussian_steps", 2000, "Training steps per setting.")
flags.DEFINE_list("gaussian_seeds", ["0"], "Seeds: each setting trains one network per seed, "
                  "with its own data, labels and initialization (the paper: 5).")
flags.DEFINE_float("gaussian_shape_tolerance", 0.25, "Share of f's range below which a rise "
                   "or fall does not count when naming its shape (analysis/shape.py).")
flag_lib.check_at_least(("gaussian_steps",), 1)
flag_lib.check("gaussian_settings", bool, "must name at least one setting flagfile")
flag_lib.check_int_list("gaussian_seeds", 0, distinct=True)
flag_lib.check("gaussian_shape_tolerance", lambda v: 0 < v < 1, "must be in (0, 1)")

OWN_FLAGS = ("gaussian_settings", "gaussian_steps", "gaussian_seeds",
             "gaussian_shape_tolerance")
# What training reads: the settings' values (see `resolve`), not the files' paths.
TRAIN_READS = (*common.TRAIN_FLAGS, "init_scale", "gaussian_setting_values", "gaussian_steps",
               "gaussian_seeds")


def _setting_flags():
  """The flags of one setting file, in a registry of their own."""
  values = flags.FlagValues()
  flags.DEFINE_integer("dim", None, "Input dimension.", flag_values=values, lower_bound=1)
  flags.DEFINE_float("variance_min", None, "Smallest diagonal entry of Sigma_x.",
                     flag_values=values, lower_bound=0)
  flags.DEFINE_float("variance_max", None, "Largest diagonal entry of Sigma_x.",
                     flag_values=values, lower_bound=0)
  flags.DEFINE_list("widths", None, "Hidden layer widths.", flag_values=values)
  flags.DEFINE_integer("samples", None, "Training examples.", flag_values=values,
                       lower_bound=1)
  for name in ("dim", "variance_min", "variance_max", "widths", "samples"):
    flags.mark_flag_as_required(name, flag_values=values)
  return values


def _resolve(path):
  """A setting path as given, or relative to the repository (where gaussian/ lives)."""
  if tf.io.gfile.exists(path) or os.path.isabs(path):
    return path
  return os.path.join(REPO, path)


def parse_setting(path):
  """Reads one setting flagfile into a dict; raises ConfigError naming the file."""
  resolved = _resolve(path)
  if not tf.io.gfile.exists(resolved):
    raise ConfigError(f"--gaussian_settings: {path} does not exist; see gaussian/*.cfg")
  values = _setting_flags()
  try:
    values(["setting", f"--flagfile={resolved}"])
    widths = flag_lib.ints(values.widths)
    if not widths or min(widths) < 1:
      raise flags.Error(f"--widths={','.join(values.widths)} must be integers >= 1")
    synthetic.variance_ladder(values.dim, values.variance_min, values.variance_max)
  except (flags.Error, ValueError) as e:
    raise ConfigError(f"--gaussian_settings: {path}: {e}") from None
  return {"dim": values.dim, "variance_min": values.variance_min,
          "variance_max": values.variance_max, "widths": widths, "samples": values.samples}


def setting_name(setting):
  widths = "x".join(map(str, setting["widths"]))
  return (f"d{setting['dim']}_v{setting['variance_min']:g}-{setting['variance_max']:g}"
          f"_w{widths}_n{setting['samples']}")


def resolve(cfg):
  """Reads the setting files: their values, not their paths, are what training reads."""
  values = [parse_setting(p) for p in cfg.gaussian_settings]
  names = [setting_name(v) for v in values]
  if len(set(names)) != len(names):
    raise ConfigError(f"--gaussian_settings: two files describe the same setting ({names})")
  for path, value in zip(cfg.gaussian_settings, values):
    if value["samples"] < cfg.batch_size:
      raise ConfigError(f"--gaussian_settings: {path} has {value['samples']} samples, fewer "
                        f"than --batch_size={cfg.batch_size}")
  cfg.gaussian_setting_values = values
  cfg.gaussian_seeds = flag_lib.ints(cfg.gaussian_seeds)
  return cfg


def _variances(setting):
  return synthetic.variance_ladder(setting["dim"], setting["variance_min"],
                                   setting["variance_max"])


def _run_folder(ctx, setting, seed):
  return ctx.path("gaussian", setting_name(setting), f"seed{seed}")


def train(ctx):
  """Trains one MLP per setting and seed, tracking the first layer's alignment."""
  cfg = ctx.cfg
  for setting in cfg.gaussian_setting_values:
    variances = _variances(setting)
    for seed in cfg.gaussian_seeds:
      folder = _run_folder(ctx, setting, seed)
      if artifacts.is_done(folder):
        logging.info("gaussian: %s seed %d already done; skipping", setting_name(setting),
                     seed)
        continue
      source = functools.partial(synthetic.gaussian_random_labels, variances,
                                 setting["samples"], NUM_CLASSES, seed)
      logging.info("gaussian: %s seed %d -> %s", setting_name(setting), seed, folder)
      _, record = trainer.train(
          model_fn=lambda s=setting, seed=seed: models.build_model(
              "mlp", NUM_CLASSES, (s["dim"],), widths=s["widths"], init_scale=cfg.init_scale,
              seed=seed),
          train_input=lambda start, source=source, seed=seed: data.make_input_fn(
              source, global_batch_size=cfg.batch_size, training=True, seed=seed,
              start_step=start),
          config=common.train_config(cfg, cfg.gaussian_steps, seed),
          strategy=ctx.strategy, model_dir=folder,
          hooks=[hooks.AlignmentHook(np.diag(variances), seed=seed,
                                     subspace_k=min(alignment.SUBSPACE_K, setting["dim"]),
                                     name=transfer.TRACK)])
      if ctx.chief:
        artifacts.mark_done(folder, record)


def _mean_sd(rows):
  """Mean over seeds and the standard deviation between them (0 for one seed)."""
  rows = np.asarray(rows, dtype=np.float64)
  return rows.mean(axis=0), rows.std(axis=0, ddof=1) if len(rows) > 1 else 0 * rows[0]


def summarize(tracks, variances, tolerance):
  """f over the variances at the first and last records, over seeds, and its shape.

  Args:
    tracks: one alignment track per seed (`transfer.alignment_track`), each with
      "transfer_function" per record, in the track's order (largest variance first).
    variances: the diagonal of Sigma_x, ascending (the paper's sigma axis, App. E.1).
    tolerance: `shape.curve_shape`'s tolerance.

  Returns:
    {"variance", "first_step", "last_step", "first_mean", "last_mean", "last_sd" (lists
    over the ascending variances), "shape" (of last_mean), "seed_shapes"}.
  """
  first = [np.asarray(t["transfer_function"][0])[::-1] for t in tracks]
  last = [np.asarray(t["transfer_function"][-1])[::-1] for t in tracks]
  last_mean, last_sd = _mean_sd(last)
  return {"variance": np.asarray(variances, dtype=np.float64).tolist(),
          "first_step": tracks[0]["step"][0], "last_step": tracks[0]["step"][-1],
          "first_mean": _mean_sd(first)[0].tolist(), "last_mean": last_mean.tolist(),
          "last_sd": np.asarray(last_sd).tolist(),
          "shape": shape.curve_shape(last_mean, tolerance),
          "seed_shapes": [shape.curve_shape(f, tolerance) for f in last]}


def analyze(ctx):
  """The transfer function tracks of every setting and seed, their mean, spread and
  shape -> results/gaussian.json."""
  cfg = ctx.cfg
  settings = {}
  for setting in cfg.gaussian_setting_values:
    folders = [_run_folder(ctx, setting, seed) for seed in cfg.gaussian_seeds]
    tracks = [transfer.alignment_track(io.read_jsonl(os.path.join(f, trainer.HISTORY)),
                                       np.diag(_variances(setting))) for f in folders]
    settings[setting_name(setting)] = {
        **setting, "seeds": list(cfg.gaussian_seeds), "tracks": tracks,
        "final_train_accuracy": [artifacts.done_summary(f)["accuracy"] for f in folders],
        **summarize(tracks, _variances(setting), cfg.gaussian_shape_tolerance)}
  if ctx.chief:
    results.write(cfg.workdir, kind="experiment", name="gaussian",
                  config={n: getattr(cfg, n) for n in OWN_FLAGS},
                  payload={"settings": settings})


def _describe(run):
  """Words for the shape of the mean f over the variances, with its numbers."""
  variance, f = run["variance"], run["last_mean"]
  peak = int(np.argmax(f))
  text = (f"{run['shape']} (seeds: {', '.join(run['seed_shapes'])}); mean f goes from "
          f"{f[0]:.3f} at variance {variance[0]:g} to {f[-1]:.3f} at {variance[-1]:g}")
  if 0 < peak < len(f) - 1:
    text += f", highest {f[peak]:.3f} at {variance[peak]:g}"
  return text


def sections(ctx, envelope):
  del ctx
  settings = envelope["payload"]["settings"]
  summary, rows = [], []
  for name, run in settings.items():
    accuracy = np.mean(run["final_train_accuracy"])
    summary.append(f"{name}, {len(run['seeds'])} seed(s), after {run['last_step']:,} steps: "
                   f"{_describe(run)} (mean train accuracy on random labels {accuracy:.0%}).")
    rows.append([name, run["dim"], "/".join(map(str, run["widths"])), run["samples"],
                 f"{run['variance_min']:g}-{run['variance_max']:g}", len(run["seeds"]),
                 f"{run['last_mean'][0]:.3f}", f"{max(run['last_mean']):.3f}",
                 f"{run['last_mean'][-1]:.3f}", run["shape"], f"{accuracy:.1%}"])
  figure = report.Plot(
      name="gaussian", png=report.figure_png(plots.gaussian(settings)),
      caption="Gaussian inputs with random labels (Maennel et al., Fig. 4 left and App. "
              "E.1): the first layer's transfer function f of an MLP trained on x ~ N(0, "
              "Sigma_x), Sigma_x diagonal, against the variance along each eigenvector (the "
              "paper's sigma axis spans the diagonal entries, so it is the variance). Solid: "
              "mean over the seeds at the end of training, with a band of one standard "
              "deviation between seeds; dashed: the mean at the first record. Each panel has "
              "its own f scale. The shape is what the weights learned about the data "
              "covariance from random labels alone.")
  return [report.Section(
      title="Gaussian inputs with random labels", summary=summary,
      blocks=[figure, report.Table(
          header=["setting", "d", "widths", "samples", "variances", "seeds",
                  "f (smallest variance)", "f (highest)", "f (largest variance)", "shape",
                  "final train accuracy"],
          rows=rows, numeric=(1, 3, 5, 6, 7, 8, 10))])]


EXPERIMENT = registry.register(registry.Experiment(
    name="gaussian",
    title="What the first layer learns from random labels on Gaussian inputs",
    flags=(*common.TRAIN_FLAGS, "init_scale", *OWN_FLAGS),
    stages=lambda cfg: [
        Stage("train", "train", train, reads=TRAIN_READS, outputs=("gaussian",), trains=True),
        Stage("analyze", "analyze", analyze,
              reads=("gaussian_setting_values", "gaussian_seeds", "gaussian_shape_tolerance"),
              after=("train",),
              outputs=(f"{results.RESULTS_DIR}/gaussian.json",))],
    check=lambda cfg: None, resolve=resolve, sections=sections))
