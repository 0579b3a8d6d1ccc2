r"""Pretrain on random labels, finetune on a disjoint set, analyze and report.

Reproduces the transfer experiment of "What Do Neural Networks Learn When Trained With
Random Labels?" (Maennel et al., NeurIPS 2020). With no flags it runs quick.cfg (the
same protocol at small scale on the offline `embedded` data set):

  python pipelines/run.py
  python pipelines/run.py --flagfile=cifar.cfg
  python pipelines/run.py --flagfile=cifar.cfg --stages=analyze,report

Rerunning a command continues where it stopped and skips finished work; --force redoes
the selected stages. Outputs: <workdir>/results.json, report.html, flags.json.
"""
import os
import sys
import types

from absl import app
from absl import flags
from absl import logging

from tfrandlabels.data.corruption import LABEL_MODES
from tfrandlabels.data.sources import parse_split
from tfrandlabels.models import available_models
from tfrandlabels.pipeline import runner
from tfrandlabels.pipeline import stages
from tfrandlabels.training.optim import OPTIMIZERS, SCHEDULES
from tfrandlabels.training.strategy import STRATEGIES
from tfrandlabels.training.trainer import PRECISIONS
from tfrandlabels.training.trainer import TrainingDiverged
from tfrandlabels.training.transfer import VARIANTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_FLAGFILE = os.path.join(REPO, "quick.cfg")
STAGES = ("pretrain", "finetune", "analyze", "gaussian", "report")

# Where and how.
flags.DEFINE_string("workdir", "workdir/quick", "Output folder (local, gs:// or ram://).")
flags.DEFINE_list("stages", ["pretrain", "finetune", "analyze", "report"], f"Stages to run, in order: {', '.join(STAGES)}.")
flags.DEFINE_bool("force", False, "Redo the selected stages, discarding their outputs, even "
                  "if the workdir holds a run with other flags.")
flags.DEFINE_enum("strategy", "auto", STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU name, grpc://host:port, or 'local' (TPU VM).")
flags.DEFINE_bool("deterministic", False, "Deterministic ops and seeds (slower).")
# Data.
flags.DEFINE_string("dataset", "embedded", "TFDS name, 'embedded', or 'folder:PATH'.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: TFDS's own).")
flags.DEFINE_string("upstream_split", "train[:3000]", "Pretraining split (random labels).")
flags.DEFINE_string("downstream_split", "train[3000:]", "Finetuning split, disjoint from "
                    "the upstream one.")
flags.DEFINE_string("test_split", "test", "Held-out split for test accuracy.")
flags.DEFINE_integer("image_size", None, "Resize images to this side (for varying sizes).")
flags.DEFINE_enum("normalize", "unit", ["unit", "standardize"], "Scale pixels to [0, 1], "
                  "or standardize with the upstream set's per-channel mean and std.")
flags.DEFINE_bool("augment", False, "Random crop and flip (the paper trains without).")
flags.DEFINE_float("upstream_label_fraction", 1.0, "Share of upstream labels randomized.")
flags.DEFINE_integer("upstream_num_classes", 10, "Number of random upstream classes.")
flags.DEFINE_enum("corruption_mode", "uniform", LABEL_MODES, "How upstream labels are "
                  "randomized.")
flags.DEFINE_integer("label_seed", 0, "Seed of the random labels.")
flags.DEFINE_enum("downstream_labels", "real", ["real", "random"], "Downstream labels.")
# Model and training.
flags.DEFINE_enum("model", "simple_cnn", available_models(), "Model family.")
flags.DEFINE_float("init_scale", 1.0, "Multiplier on the He-normal initialization.")
flags.DEFINE_integer("batch_size", 64, "Global batch size.")
flags.DEFINE_enum("optimizer", "sgd", OPTIMIZERS, "Optimizer.")
flags.DEFINE_float("learning_rate", 0.01, "Initial learning rate.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_enum("schedule", "constant", SCHEDULES, "Learning-rate schedule.")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay.")
flags.DEFINE_enum("precision", "float32", PRECISIONS, "float32, or mixed_bfloat16 (TPU) / "
                  "mixed_float16 (GPU).")
flags.DEFINE_integer("pretrain_steps", 300, "Upstream training steps.")
flags.DEFINE_integer("pretrain_seed", 0, "Seed of the upstream initialization and order.")
flags.DEFINE_integer("finetune_steps", 200, "Downstream training steps per run.")
flags.DEFINE_list("variants", list(VARIANTS), f"Finetune variants: {', '.join(VARIANTS)}.")
flags.DEFINE_list("transfer_layers", ["1"], "Numbers k of leading layers to transfer.")
flags.DEFINE_list("seeds", ["0", "1"], "Finetuning seeds (initialization and data order).")
flags.DEFINE_integer("steps_per_loop", 25, "Training steps per host call.")
flags.DEFINE_integer("log_every", 25, "Steps between history records.")
flags.DEFINE_integer("checkpoint_every", 100, "Steps between checkpoints.")
flags.DEFINE_integer("eval_every", 0, "Steps between test evaluations (0: at the end).")
# Analysis.
flags.DEFINE_float("target_accuracy", 0.9, "Train accuracy whose first crossing defines "
                   "the steps-to-target and speed-up.")
flags.DEFINE_integer("attribution_images", 4, "Test images in the attribution figure.")
flags.DEFINE_list("gaussian_settings", ["10:1.0-1.9:2048x256:10000"],
                  "Stage gaussian: DIM:LOW-HIGH:WIDTHS:SAMPLES, Sigma_x = diag(LOW..HIGH).")
flags.DEFINE_integer("gaussian_steps", 2000, "Stage gaussian: training steps per setting.")

FLAGS = flags.FLAGS
EXPERIMENT_FLAGS = [flag.name for flag in FLAGS.get_flags_for_module(sys.modules[__name__])]


def _ints(values):
  try:
    return [int(v) for v in values]
  except ValueError:
    return None


def _parses(parse):
  """A validator that accepts the values `parse` accepts (it raises ValueError otherwise)."""
  def check(text):
    try:
      parse(text)
    except ValueError:
      return False
    return True
  return check


def _register_validators():
  """Every flag is checked before anything runs; absl reports a failure in one line."""
  checks = [
      ("stages", lambda v: v and all(s in STAGES for s in v),
       f"must be a comma list of {', '.join(STAGES)}"),
      ("variants", lambda v: v and all(x in VARIANTS for x in v),
       f"must be a comma list of {', '.join(VARIANTS)}"),
      ("seeds", lambda v: bool(v) and _ints(v) is not None and len(set(v)) == len(v),
       "must be a non-empty comma list of distinct integers, e.g. 0,1,2"),
      ("transfer_layers", lambda v: bool(v) and _ints(v) is not None and min(_ints(v)) >= 1,
       "must be a non-empty comma list of integers >= 1"),
      ("upstream_label_fraction", lambda v: 0 <= v <= 1, "must be in [0, 1]"),
      ("target_accuracy", lambda v: 0 < v <= 1, "must be in (0, 1]"),
      ("upstream_num_classes", lambda v: v >= 2, "must be >= 2"),
      ("init_scale", lambda v: v > 0, "must be > 0"),
      ("learning_rate", lambda v: v > 0, "must be > 0"),
      ("weight_decay", lambda v: v >= 0, "must be >= 0"),
      ("image_size", lambda v: v is None or v >= 8, "must be >= 8"),
      ("attribution_images", lambda v: 1 <= v <= 16, "must be between 1 and 16"),
      ("workdir", bool, "must be a folder path"),
      ("gaussian_settings",
       lambda v: bool(v) and all(_parses(stages.parse_gaussian_setting)(x) for x in v),
       "must be a comma list of DIM:LOW-HIGH:WIDTHS:SAMPLES, e.g. 30:0.1-3.0:2048x256:10000"),
  ]
  for name in ("batch_size", "pretrain_steps", "finetune_steps", "gaussian_steps",
               "steps_per_loop", "log_every", "checkpoint_every"):
    checks.append((name, lambda v: v >= 1, "must be >= 1"))
  checks.append(("eval_every", lambda v: v >= 0, "must be >= 0 (0: at the end only)"))
  for name in ("upstream_split", "downstream_split", "test_split"):
    checks.append((name, _parses(parse_split),
                   "must be a split such as train, train[:20000], train[25000:], test[:10%]"))
  for name, check, message in checks:
    flags.register_validator(name, check, message=f"--{name} {message}")


def settings():
  """The validated flags as a namespace, lists converted to their element types."""
  values = {name: FLAGS[name].value for name in EXPERIMENT_FLAGS}
  values["seeds"] = _ints(values["seeds"])
  values["transfer_layers"] = sorted(set(_ints(values["transfer_layers"])))
  return types.SimpleNamespace(**values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; every setting is a --flag")
  cfg = settings()
  try:
    report = runner.run(cfg)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  except TrainingDiverged as e:
    logging.error("%s", e)
    sys.exit(1)
  if report:
    print(f"report: {report}")


def _default_flagfile(argv):
  """With no --flagfile, reads quick.cfg first so the defaults are its settings."""
  if any(a.startswith(("--flagfile", "-flagfile")) for a in argv[1:]):
    return argv
  return [argv[0], f"--flagfile={DEFAULT_FLAGFILE}"] + argv[1:]


if __name__ == "__main__":
  _register_validators()
  app.run(main, argv=_default_flagfile(sys.argv))
