"""`pipelines/analyze.py`: runs registered analyses on a model trained anywhere.

`--model_path` is a Keras model file (`model.save("x.keras")`, local or gs://), or a
pipeline workdir with `--checkpoint=NAME` naming one of its experiment's models
(e.g. `scratch`, `random_labels`). Writes `<workdir>/results/<analysis>.json`
(the same format the pipeline writes) and `<workdir>/report.html`.
"""
import functools
import os
import tempfile
import types

from absl import flags
from absl import logging
import keras
import tensorflow as tf

from tfrandlabels import analyses
from tfrandlabels import data
from tfrandlabels import errors
from tfrandlabels import experiments
from tfrandlabels import io
from tfrandlabels.analyses import registry
from tfrandlabels.errors import ConfigError
from tfrandlabels.experiments import common
from tfrandlabels.pipeline import cli
from tfrandlabels.pipeline import flags as flag_lib
from tfrandlabels.pipeline import lock
from tfrandlabels.pipeline import report
from tfrandlabels.pipeline import runner
from tfrandlabels.pipeline.context import Context

flags.DEFINE_string("model_path", None, "A saved Keras model (.keras), or a pipeline "
                    "workdir together with --checkpoint.")
flags.DEFINE_string("checkpoint", None, "With a pipeline workdir as --model_path: which of "
                    "its models, e.g. scratch, random_labels, pretrained_k1.")
flags.DEFINE_string("split", "test", "Split the analyses read.")
flag_lib.check_split("split")

FLAGS = flags.FLAGS
OWN_FLAGS = ("model_path", "checkpoint", "split", "analyses", "workdir", "dataset",
             "data_dir", "image_size", "normalize", "eval_filter", "batch_size")


def load_keras_model(path):
  """Loads a .keras file (copied locally first, so gs:// works); ConfigError if unreadable."""
  if not tf.io.gfile.exists(path):
    raise ConfigError(f"--model_path={path}: no such file")
  with tempfile.TemporaryDirectory() as folder:
    local = os.path.join(folder, "model.keras")
    tf.io.gfile.copy(path, local)
    try:
      return keras.saving.load_model(local, compile=False)
    except (ValueError, OSError, TypeError) as e:
      first = errors.first_line(e)
      raise ConfigError(f"--model_path={path}: not a loadable Keras model ({first[:200]})"
                        ) from None


def _pipeline_model(cfg):
  """(model, analysis data) of a model a pipeline run trained, from its saved flags."""
  saved = io.read_json(os.path.join(cfg.model_path, runner.FLAGS_FILE))
  if saved is None:
    raise ConfigError(f"--model_path={cfg.model_path}: a folder without {runner.FLAGS_FILE} "
                      "is not a pipeline workdir; pass a .keras file")
  experiment = experiments.get(saved["experiment"])
  run_cfg = types.SimpleNamespace(**{**saved, "workdir": cfg.model_path})
  sources = experiment.models(run_cfg)
  if cfg.checkpoint not in sources:
    raise ConfigError(f"--checkpoint={cfg.checkpoint} is not a model of that run; choose "
                      f"from {', '.join(sources)}")
  ctx = Context(run_cfg, tf.distribute.get_strategy())
  return (sources[cfg.checkpoint].load(ctx),
          experiment.analysis_data(ctx).for_model(cfg.checkpoint))


def _user_data(cfg, ctx, model):
  """Analysis data from the data flags, checked against the model's input."""
  common.check_split(cfg, "split", cfg.split)
  size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
  shape = (*size, common.input_shape(cfg, cfg.split)[-1]) if size else common.input_shape(
      cfg, cfg.split)
  if tuple(model.input_shape[1:]) != tuple(shape):
    raise ConfigError(f"--model_path={cfg.model_path} takes inputs of shape "
                      f"{tuple(model.input_shape[1:])}; --dataset={cfg.dataset} gives "
                      f"{tuple(shape)} (set --image_size to resize)")
  return registry.AnalysisData(
      dataset=cfg.dataset, split=cfg.split,
      source=functools.partial(data.load, cfg.dataset, cfg.split, cfg.data_dir),
      batch_ops=common.batch_ops(ctx, training=False, stats_split=cfg.split),
      batch_size=cfg.batch_size, num_classes=common.num_classes(cfg), image_size=size)


def main():
  cfg = flag_lib.settings(OWN_FLAGS + ("input_corruption", "input_corruption_seed",
                                       "train_filter"))
  if not cfg.model_path:
    raise ConfigError("--model_path is required: a .keras file or a pipeline workdir")
  names = [n for n in cfg.analyses if n != "none"] or list(analyses.available())
  chosen = [analyses.get(n) for n in names]
  ctx = Context(cfg, tf.distribute.get_strategy())
  if tf.io.gfile.isdir(cfg.model_path):
    if not cfg.checkpoint:
      raise ConfigError(f"--model_path={cfg.model_path} is a folder: name one of its models "
                        "with --checkpoint")
    model, analysis_data = _pipeline_model(cfg)
  else:
    model = load_keras_model(cfg.model_path)
    analysis_data = _user_data(cfg, ctx, model)
  sections = []
  # It writes into --workdir (which may be a pipeline's), so it holds it as a run does;
  # --model_path is only read.
  with lock.held(cfg.workdir):
    for analysis in chosen:
      settings = flag_lib.settings(analysis.flags)
      payload = registry.run_analysis(analysis, {"model": lambda: model}, analysis_data,
                                      settings, cfg.workdir, config=vars(settings))
      sections.append(registry.section(analysis, payload, cfg.workdir))
      logging.info("analysis %s: wrote %s", analysis.name, cfg.workdir)
    path = report.render(cfg.workdir, title=f"Analyses of {cfg.model_path}",
                         sections=sections, config={n: getattr(cfg, n) for n in OWN_FLAGS})
  print(f"report: {path}")


def run(argv):
  FLAGS.set_default("workdir", "workdir/analyze")
  cli.start(main, argv)
