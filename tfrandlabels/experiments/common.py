"""What image experiments share: data, model and training flags, and the wiring from
those flags to inputs, models and trainer configs.

Each experiment lists the groups it reads (`DATA_FLAGS`, `MODEL_FLAGS`, `TRAIN_FLAGS`);
a flag it does not read never affects its outputs.
"""
import functools

from absl import flags

from tfrandlabels import data
from tfrandlabels import models
from tfrandlabels.data import ops
from tfrandlabels.errors import ConfigError
from tfrandlabels.pipeline import artifacts
from tfrandlabels.pipeline import flags as flag_lib
from tfrandlabels.training import precision
from tfrandlabels.training import trainer
from tfrandlabels.training.optim import OPTIMIZERS, SCHEDULES

flags.DEFINE_string("dataset", "embedded", "TFDS name, 'embedded', or 'folder:PATH'.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: TFDS's own).")
flags.DEFINE_integer("image_size", None, "Resize images to this side (for varying sizes).")
flags.DEFINE_enum("normalize", "unit", ["unit", "standardize"], "Scale pixels to [0, 1], "
                  "or standardize with the training set's per-channel mean and std.")
flags.DEFINE_bool("augment", False, "Random crop and flip (the papers train without).")
flags.DEFINE_string("train_filter", "", f"Frequency filter on training batches: "
                    f"{ops.FILTER_FORMS}; empty for none.")
flags.DEFINE_string("eval_filter", "", "Frequency filter on evaluation batches, as "
                    "--train_filter.")
flags.DEFINE_string("input_corruption", "", f"Corrupt training images: {ops.CORRUPTION_FORM}"
                    ", e.g. shuffled_pixels:0.5 (Zhang et al. 2017); empty for none.")
flags.DEFINE_integer("input_corruption_seed", 0, "Seed of --input_corruption.")
flags.DEFINE_enum("model", "simple_cnn", models.available_models(), "Model family.")
flags.DEFINE_float("init_scale", 1.0, "Multiplier on the He-normal initialization.")
flags.DEFINE_string("model_options", "", "Options of --model's builder as NAME=VALUE pairs "
                    "(integers, numbers, or integer lists as 16/32), e.g. "
                    "'filters=64,hidden=64' for simple_cnn; empty: the builder's defaults.")
flags.DEFINE_integer("batch_size", 64, "Global batch size.")
flags.DEFINE_enum("optimizer", "sgd", OPTIMIZERS, "Optimizer.")
flags.DEFINE_float("learning_rate", 0.01, "Initial learning rate.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_bool("nesterov", False, "SGD with Nesterov momentum. Read by the experiments "
                  "that list it (frequency_shortcuts), so other workdirs stay valid.")
flags.DEFINE_enum("schedule", "constant", SCHEDULES, "Learning-rate schedule.")
flags.DEFINE_integer("warmup_steps", 0, "Steps of linear learning-rate warm-up in front of "
                     "--schedule (0: none).")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay.")
flags.DEFINE_enum("precision", precision.AUTO, (precision.AUTO,) + trainer.PRECISIONS,
                  "auto (mixed_bfloat16 on TPU and on CPUs with bfloat16 matrix units, "
                  "mixed_float16 on GPUs with tensor cores, float32 otherwise), or one of "
                  "those by name. Losses, metrics, master weights and analyses stay float32.")
flags.DEFINE_integer("steps_per_loop", 25, "Training steps per host call.")
flags.DEFINE_integer("log_every", 25, "Steps between history records.")
flags.DEFINE_integer("checkpoint_every", 100, "Steps between checkpoints.")
flags.DEFINE_integer("eval_every", 0, "Steps between test evaluations (0: at the end).")

DATA_FLAGS = ("dataset", "data_dir", "image_size", "normalize", "augment", "train_filter",
              "eval_filter", "input_corruption", "input_corruption_seed")
MODEL_FLAGS = ("model", "init_scale", "model_options")
TRAIN_FLAGS = ("batch_size", "optimizer", "learning_rate", "momentum", "schedule",
               "warmup_steps", "weight_decay", "precision", "steps_per_loop", "log_every",
               "checkpoint_every", "eval_every")

flag_lib.check("image_size", lambda v: v is None or v >= 8, "must be >= 8")
flag_lib.check("init_scale", lambda v: v > 0, "must be > 0")
flag_lib.check("learning_rate", lambda v: v > 0, "must be > 0")
flag_lib.check("momentum", lambda v: 0 <= v < 1, "must be in [0, 1)")
flag_lib.check("weight_decay", lambda v: v >= 0, "must be >= 0")
flag_lib.check_at_least(("batch_size", "steps_per_loop", "log_every", "checkpoint_every"), 1)
flag_lib.check_at_least(("eval_every", "warmup_steps"), 0)
for _name in ("train_filter", "eval_filter"):
  flag_lib.check_parses(_name, ops.parse_filter, f"must be {ops.FILTER_FORMS}", optional=True)
flag_lib.check_parses("input_corruption", ops.parse_corruption,
                      f"must be {ops.CORRUPTION_FORM}, FRACTION in [0, 1]", optional=True)


@functools.lru_cache(maxsize=None)
def _num_classes(dataset, data_dir):
  return data.num_classes(dataset, data_dir)


def num_classes(cfg):
  return _num_classes(cfg.dataset, cfg.data_dir)


@functools.lru_cache(maxsize=None)
def _input_shape(dataset, split, data_dir, image_size):
  shape = data.load(dataset, split, data_dir).element_spec["image"].shape
  if image_size:
    return (image_size, image_size, shape[-1])
  if None in shape:
    raise ConfigError(f"--dataset={dataset}: images vary in size; set --image_size")
  return tuple(shape)


def input_shape(cfg, split):
  return _input_shape(cfg.dataset, split, cfg.data_dir, cfg.image_size)


def check_split(cfg, flag, split, min_examples=1):
  """The examples `--flag=split` selects, as (name, start, stop); refuses an empty one."""
  try:
    ranges = data.example_ranges(cfg.dataset, split, cfg.data_dir)
  except ValueError as e:
    raise ConfigError(f"--{flag}={split}: {e}") from None
  count = sum(stop - start for _, start, stop in ranges)
  if count < min_examples:
    raise ConfigError(f"--{flag}={split} selects {count} examples of --dataset="
                      f"{cfg.dataset}; it needs at least {min_examples} (--batch_size="
                      f"{cfg.batch_size} for training)")
  return ranges


def moments(ctx, split):
  """Per-channel mean and std (uint8 units) of a split, computed once per workdir."""
  cfg = ctx.cfg
  key = {"dataset": cfg.dataset, "split": split, "image_size": cfg.image_size}

  def compute():
    mean, std = data.channel_moments(data.load(cfg.dataset, split, cfg.data_dir))
    return {"mean": mean.tolist(), "std": std.tolist()}

  return artifacts.cached(ctx.path("cache"), "moments", key, compute, write=ctx.chief)


def batch_ops(ctx, *, training, stats_split):
  """The ops that turn uint8 batches into the model's inputs, from the data flags.

  Normalization uses `stats_split`'s moments (`--normalize=standardize`); input
  corruption and `--train_filter` apply to training batches, `--eval_filter` to others.
  """
  cfg = ctx.cfg
  stats = (moments(ctx, stats_split) if cfg.normalize == "standardize"
           else {"mean": [0.0], "std": [255.0]})
  corrupt = cfg.input_corruption if training else ""
  data_moments = (None, None)
  if corrupt and ops.parse_corruption(corrupt)[0] == "gaussian":
    raw = moments(ctx, stats_split)
    data_moments = (raw["mean"], raw["std"])
  return ops.image_ops(mean=stats["mean"], std=stats["std"], corruption_spec=corrupt,
                       moments=data_moments, seed=cfg.input_corruption_seed,
                       filter_spec=cfg.train_filter if training else cfg.eval_filter)


def make_input(ctx, source, *, training, stats_split, seed=0, start_step=0):
  """An input_fn over `source()` (uint8 dicts) with the flags' ops, for the strategy."""
  cfg = ctx.cfg
  size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
  return data.make_input_fn(
      source, global_batch_size=cfg.batch_size, training=training, seed=seed,
      start_step=start_step, augment=cfg.augment and training, image_size=size,
      batch_ops=batch_ops(ctx, training=training, stats_split=stats_split),
      drop_remainder=training or cfg.strategy == "tpu" or bool(cfg.tpu))


def _option_value(text):
  if text in ("true", "false"):
    return text == "true"
  if "/" in text:
    return tuple(int(part) for part in text.split("/"))
  try:
    return int(text)
  except ValueError:
    return float(text)


def parse_model_options(text):
  """'filters=64,widths=16/32,batch_norm=true' -> {'filters': 64, 'widths': (16, 32),
  'batch_norm': True}; init_scale and seed have flags of their own."""
  options = {}
  for pair in filter(None, text.split(",")):
    name, sep, value = pair.partition("=")
    if not sep or not name.isidentifier() or name in options:
      raise ValueError(f"{pair!r} is not a new NAME=VALUE pair")
    if name in ("init_scale", "seed"):
      raise ValueError(f"{name} has a flag of its own")
    options[name] = _option_value(value)
  return options


flag_lib.check_parses("model_options", parse_model_options,
                      "must be NAME=VALUE pairs separated by commas, e.g. filters=64,hidden=64 "
                      "(init_scale and seed have flags of their own)",
                      optional=True)


def build(cfg, classes, seed, shape):
  """The experiment's model: --model with --model_options, --init_scale and `seed`."""
  try:
    return models.build_model(cfg.model, classes, shape, init_scale=cfg.init_scale,
                              seed=seed, **parse_model_options(cfg.model_options))
  except ValueError as e:
    raise ConfigError(f"--model={cfg.model} --model_options={cfg.model_options}: "
                      f"{str(e).rstrip('.')}") from None


def train_config(cfg, steps, seed):
  return trainer.TrainConfig(
      steps=steps, batch_size=cfg.batch_size, optimizer=cfg.optimizer,
      learning_rate=cfg.learning_rate, momentum=cfg.momentum, schedule=cfg.schedule,
      warmup_steps=cfg.warmup_steps,
      weight_decay=cfg.weight_decay, precision=cfg.precision, deterministic=cfg.deterministic,
      seed=seed, steps_per_loop=cfg.steps_per_loop, log_every=cfg.log_every,
      checkpoint_every=cfg.checkpoint_every, eval_every=cfg.eval_every)

