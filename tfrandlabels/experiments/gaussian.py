"""Gaussian inputs with random labels (Maennel et al., NeurIPS 2020, Fig. 4 left and
Appendix E.1): what the first layer learns about the input covariance from labels
that carry no information.

Each setting trains `mlp` on x ~ N(0, diag(variance_min .. variance_max)) with labels
uniform over 10 classes and tracks the first layer's transfer function
f(sigma_i) = sqrt(v_i' Sigma_w v_i). A setting is a small flagfile of its own
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
flags.DEFINE_integer("gaussian_seed", 0, "Seed of the data, labels and initialization.")
flag_lib.check_at_least(("gaussian_steps",), 1)
flag_lib.check("gaussian_settings", bool, "must name at least one setting flagfile")

OWN_FLAGS = ("gaussian_settings", "gaussian_steps", "gaussian_seed")
# What training reads: the settings' values (see `resolve`), not the files' paths.
TRAIN_READS = (*common.TRAIN_FLAGS, "init_scale", "gaussian_setting_values", "gaussian_steps",
               "gaussian_seed")


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
  return cfg


def _variances(setting):
  return synthetic.variance_ladder(setting["dim"], setting["variance_min"],
                                   setting["variance_max"])


def train(ctx):
  """Trains one MLP per setting, tracking the first layer's alignment."""
  cfg = ctx.cfg
  for setting in cfg.gaussian_setting_values:
    folder = ctx.path("gaussian", setting_name(setting))
    if artifacts.is_done(folder):
      logging.info("gaussian: %s already done; skipping", setting_name(setting))
      continue
    variances = _variances(setting)
    source = functools.partial(synthetic.gaussian_random_labels, variances,
                               setting["samples"], NUM_CLASSES, cfg.gaussian_seed)
    logging.info("gaussian: %s -> %s", setting_name(setting), folder)
    _, record = trainer.train(
        model_fn=lambda s=setting: models.build_model(
            "mlp", NUM_CLASSES, (s["dim"],), widths=s["widths"], init_scale=cfg.init_scale,
            seed=cfg.gaussian_seed),
        train_input=lambda start, source=source: data.make_input_fn(
            source, global_batch_size=cfg.batch_size, training=True,
            seed=cfg.gaussian_seed, start_step=start),
        config=common.train_config(cfg, cfg.gaussian_steps, cfg.gaussian_seed),
        strategy=ctx.strategy, model_dir=folder,
        hooks=[hooks.AlignmentHook(np.diag(variances), seed=cfg.gaussian_seed,
                                   subspace_k=min(alignment.SUBSPACE_K, setting["dim"]),
                                   name=transfer.TRACK)])
    if ctx.chief:
      artifacts.mark_done(folder, record)


def analyze(ctx):
  """The transfer function tracks of every setting -> results/gaussian.json."""
  cfg = ctx.cfg
  settings = {}
  for setting in cfg.gaussian_setting_values:
    folder = ctx.path("gaussian", setting_name(setting))
    track = transfer.alignment_track(io.read_jsonl(os.path.join(folder, trainer.HISTORY)),
                                     np.diag(_variances(setting)))
    settings[setting_name(setting)] = {
        **setting, "track": track,
        "final_train_accuracy": artifacts.done_summary(folder)["accuracy"]}
  if ctx.chief:
    results.write(cfg.workdir, kind="experiment", name="gaussian",
                  config={n: getattr(cfg, n) for n in OWN_FLAGS},
                  payload={"settings": settings})


def _shape(sigma, f):
  """Words for the shape of f(sigma) at the end of training, with its numbers."""
  peak = int(np.argmax(f))
  text = (f"f goes from {f[0]:.3f} at sigma={sigma[0]:.2f} to {f[-1]:.3f} at "
          f"sigma={sigma[-1]:.2f}")
  if 0 < peak < len(f) - 1:
    text += f", peaking at {f[peak]:.3f} (sigma={sigma[peak]:.2f})"
  return text


def sections(ctx, envelope):
  del ctx
  settings = envelope["payload"]["settings"]
  summary, rows = [], []
  for name, run in settings.items():
    track = run["track"]
    # The track's sigma axis is descending (largest eigenvalue first).
    sigma, f = np.asarray(track["sigma"])[::-1], np.asarray(track["transfer_function"][-1])[::-1]
    summary.append(f"{name} after {track['step'][-1]:,} steps: {_shape(sigma, f)} "
                   f"(train accuracy on random labels {run['final_train_accuracy']:.0%}).")
    rows.append([name, run["dim"], "/".join(map(str, run["widths"])), run["samples"],
                 f"{run['variance_min']:g}-{run['variance_max']:g}", f"{f[0]:.3f}",
                 f"{f[-1]:.3f}", f"{run['final_train_accuracy']:.1%}"])
  figure = report.Plot(
      name="gaussian", png=report.figure_png(plots.gaussian(
          {n: {**r, **r["track"]} for n, r in settings.items()})),
      caption="Gaussian inputs with random labels (Maennel et al., Fig. 4 left and App. "
              "E.1): the first layer's transfer function f(sigma) of an MLP trained on "
              "x ~ N(0, Sigma_x), Sigma_x diagonal, at several points of training. Its "
              "shape is what the weights learned about the data covariance from random "
              "labels alone.")
  return [report.Section(
      title="Gaussian inputs with random labels", summary=summary,
      blocks=[figure, report.Table(
          header=["setting", "d", "widths", "samples", "variances", "f(smallest sigma)",
                  "f(largest sigma)", "final train accuracy"],
          rows=rows, numeric=(1, 3, 5, 6, 7))])]


EXPERIMENT = registry.register(registry.Experiment(
    name="gaussian",
    title="What the first layer learns from random labels on Gaussian inputs",
    flags=(*common.TRAIN_FLAGS, "init_scale", *OWN_FLAGS),
    stages=lambda cfg: [
        Stage("train", "train", train, reads=TRAIN_READS, outputs=("gaussian",), trains=True),
        Stage("analyze", "analyze", analyze, reads=("gaussian_setting_values",),
              after=("train",),
              outputs=(f"{results.RESULTS_DIR}/gaussian.json",))],
    check=lambda cfg: None, resolve=resolve, sections=sections))
