"""The transfer experiment of "What Do Neural Networks Learn When Trained With Random
Labels?" (Maennel et al., NeurIPS 2020): pretrain on random labels, finetune on a
disjoint split with real labels, and compare against controls for weight scale.

Stages: pretrain -> finetune -> analyze (results/transfer.json) -> the analyses
(default: alignment of the random-label network and scratch, attribution maps of
scratch and the first transferred run; any other asked for with --analyses on those two
side by side, and on the random-label network too unless it reads the outputs as the
real classes, e.g. volume_element but not dominant_frequencies) -> report. Workdir:

  pretrain/                           random-label pretraining (checkpoints, history)
  finetune/<variant>[_k<k>]/seed<s>/  one downstream run per variant, depth and seed
  cache/                              data moments and Sigma_x, keyed by their inputs
"""
import functools

from absl import flags
from absl import logging
import numpy as np

from tfrandlabels import analyses
from tfrandlabels import data
from tfrandlabels import io
from tfrandlabels import models
from tfrandlabels.analyses import alignment as alignment_analysis
from tfrandlabels.analyses.registry import AnalysisData
from tfrandlabels.analysis import alignment
from tfrandlabels.analysis import curves
from tfrandlabels.analysis import layer_inputs
from tfrandlabels.data.corruption import LABEL_MODES
from tfrandlabels.errors import ConfigError
from tfrandlabels.experiments import common
from tfrandlabels.experiments import registry
from tfrandlabels.experiments import transfer_report
from tfrandlabels.pipeline import artifacts
from tfrandlabels.pipeline import flags as flag_lib
from tfrandlabels.pipeline import results
from tfrandlabels.pipeline.stage import Stage
from tfrandlabels.training import hooks
from tfrandlabels.training import trainer
from tfrandlabels.training import transfer

flags.DEFINE_string("upstream_split", "train[:3000]", "Pretraining split (random labels).")
flags.DEFINE_string("downstream_split", "train[3000:]", "Finetuning split, disjoint from "
                    "the upstream one.")
flags.DEFINE_string("test_split", "test", "Held-out split for test accuracy and analyses.")
flags.DEFINE_float("upstream_label_fraction", 1.0, "Share of upstream labels randomized.")
flags.DEFINE_integer("upstream_num_classes", 10, "Number of random upstream classes.")
flags.DEFINE_enum("corruption_mode", "uniform", LABEL_MODES, "How upstream labels are "
                  "randomized.")
flags.DEFINE_integer("label_seed", 0, "Seed of the random labels.")
flags.DEFINE_enum("downstream_labels", "real", ["real", "random"], "Downstream labels.")
flags.DEFINE_integer("pretrain_steps", 300, "Upstream training steps.")
flags.DEFINE_integer("pretrain_seed", 0, "Seed of the upstream initialization and order.")
flags.DEFINE_integer("finetune_steps", 200, "Downstream training steps per run.")
flags.DEFINE_list("variants", list(transfer.VARIANTS),
                  f"Finetune variants: {', '.join(transfer.VARIANTS)}.")
flags.DEFINE_list("transfer_layers", ["1"], "Numbers k of leading layers to transfer.")
flags.DEFINE_list("depth_variants", None, "Variants finetuned at every k of "
                  "--transfer_layers; the other variants only at the smallest k. Names outside "
                  "--variants are ignored. Empty (the default): every variant.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Finetuning seeds (initialization and order).")
flags.DEFINE_float("target_accuracy", 0.9, "Train accuracy whose first crossing defines "
                   "the steps-to-target and speed-up.")

OWN_FLAGS = ("upstream_split", "downstream_split", "test_split", "upstream_label_fraction",
             "upstream_num_classes", "corruption_mode", "label_seed", "downstream_labels",
             "pretrain_steps", "pretrain_seed", "finetune_steps", "variants",
             "transfer_layers", "depth_variants", "seeds", "target_accuracy")
# Sigma_x is tracked during training only when the first layer sees at most this many
# inputs per unit (a 3x3x3 conv sees 27; a dense layer on a 32x32x3 image 3072).
MAX_TRACKED_DIM = 1024
TRACK = "alignment"  # The alignment hook's name: its history keys are "alignment/...".
# Deeper conv layers (Maennel et al., Sec. 2.5) are tracked during pretraining on the
# first LAYER_SAMPLE_SIZE model-ready images of the upstream split, taken once: their
# Sigma_x is recomputed from the current activations at each tracked step, so it is an
# estimate from a sample (for a 3x3 layer behind a 30x30 map, 256 images give ~200k
# patches for d = 288). They are tracked at about LAYER_TRACK_POINTS log steps spread
# over pretraining (and at the first), not at every one: with strided_cnn (conv2, d =
# 144) one costs ~0.12 s on 2 CPU cores, as much as 5 to 10 of its training steps, so 20
# points over quick.cfg's 2,000 steps add under 10%.
LAYER_SAMPLE_SIZE = 256
LAYER_TRACK_POINTS = 20

for _name in ("upstream_split", "downstream_split", "test_split"):
  flag_lib.check_split(_name)
flag_lib.check("upstream_label_fraction", lambda v: 0 <= v <= 1, "must be in [0, 1]")
flag_lib.check("target_accuracy", lambda v: 0 < v <= 1, "must be in (0, 1]")
flag_lib.check("upstream_num_classes", lambda v: v >= 2, "must be >= 2")
flag_lib.check_at_least(("pretrain_steps", "finetune_steps"), 1)
flag_lib.check("variants", lambda v: bool(v) and set(v) <= set(transfer.VARIANTS),
               f"must be a comma list of {', '.join(transfer.VARIANTS)}")
flag_lib.check_int_list("transfer_layers", 1)
_TRANSFERRING = [v for v in transfer.VARIANTS if v != "scratch"]
flag_lib.check("depth_variants", lambda v: not v or set(v) <= set(_TRANSFERRING),
               f"must be a comma list of {', '.join(_TRANSFERRING)}")
flag_lib.check_int_list("seeds", 0, distinct=True)

# Training stages also read --alignment_subspace_k (a flag of the alignment analysis):
# their alignment hooks record the subspace overlap with that k.
PRETRAIN_FLAGS = (*common.DATA_FLAGS, *common.MODEL_FLAGS, *common.TRAIN_FLAGS,
                  "upstream_split", "test_split", "upstream_label_fraction",
                  "upstream_num_classes", "corruption_mode", "label_seed", "pretrain_steps",
                  "pretrain_seed", "alignment_subspace_k")
FINETUNE_FLAGS = (*common.DATA_FLAGS, *common.MODEL_FLAGS, *common.TRAIN_FLAGS,
                  "upstream_split", "downstream_split", "test_split", "downstream_labels",
                  "label_seed", "upstream_num_classes", "finetune_steps", "variants",
                  "transfer_layers", "depth_variants", "seeds", "alignment_subspace_k")
ANALYZE_FLAGS = ("target_accuracy", "variants", "transfer_layers", "depth_variants", "seeds")
DATA_FOR_ANALYSES = (*common.DATA_FLAGS, "upstream_split", "test_split")


def run_name(variant, k):
  return "scratch" if variant == "scratch" else f"{variant}_k{k}"


def finetune_runs(cfg):
  """(variant, k) pairs to finetune: scratch once, every other variant at each k (a
  variant outside --depth_variants, when given, at the smallest k only)."""
  depths = sorted(set(cfg.transfer_layers))
  deep = cfg.depth_variants or cfg.variants
  runs = [("scratch", 0)] if "scratch" in cfg.variants else []
  return runs + [(v, k) for v in cfg.variants if v != "scratch"
                 for k in (depths if v in deep else depths[:1])]


# --- data --------------------------------------------------------------------------


def upstream_source(cfg):
  """The upstream split with random labels (fraction, k classes, seed from flags)."""
  return data.corrupt_labels(
      data.load(cfg.dataset, cfg.upstream_split, cfg.data_dir),
      fraction=cfg.upstream_label_fraction, num_classes=cfg.upstream_num_classes,
      seed=cfg.label_seed, mode=cfg.corruption_mode)


def downstream_source(cfg):
  """The downstream split, with real labels or (--downstream_labels=random) random ones."""
  ds = data.load(cfg.dataset, cfg.downstream_split, cfg.data_dir)
  if cfg.downstream_labels == "random":
    ds = data.corrupt_labels(ds, fraction=1.0, num_classes=common.num_classes(cfg),
                             seed=cfg.label_seed + 1, mode="uniform")
  return ds


def test_source(cfg):
  return data.load(cfg.dataset, cfg.test_split, cfg.data_dir)


def make_input(ctx, source, *, training, seed=0, start_step=0):
  return common.make_input(ctx, functools.partial(source, ctx.cfg), training=training,
                           stats_split=ctx.cfg.upstream_split, seed=seed,
                           start_step=start_step)


def build(cfg, classes, seed):
  return common.build(cfg, classes, seed, common.input_shape(cfg, cfg.test_split))


def load_random_label_model(ctx):
  model = build(ctx.cfg, ctx.cfg.upstream_num_classes, ctx.cfg.pretrain_seed)
  return trainer.load_weights(model, ctx.path("pretrain"))


def load_finetuned(ctx, name, seed):
  model = build(ctx.cfg, common.num_classes(ctx.cfg), seed)
  return trainer.load_weights(model, ctx.path("finetune", name, f"seed{seed}"))


# --- checks --------------------------------------------------------------------------


def _overlap(a, b):
  return any(x[0] == y[0] and max(x[1], y[1]) < min(x[2], y[2]) for x in a for y in b)


def check(cfg):
  """Splits exist, are large enough and disjoint; every variant fits the model; the
  subspace overlap's k fits the first layer."""
  up = common.check_split(cfg, "upstream_split", cfg.upstream_split, cfg.batch_size)
  down = common.check_split(cfg, "downstream_split", cfg.downstream_split, cfg.batch_size)
  if _overlap(up, down):
    raise ConfigError(f"--downstream_split={cfg.downstream_split} overlaps --upstream_split="
                      f"{cfg.upstream_split}; the paper's downstream set is disjoint "
                      "(e.g. train[:20000] and train[25000:])")
  common.check_split(cfg, "test_split", cfg.test_split)
  model = build(cfg, common.num_classes(cfg), 0)
  kernel_shape = models.weight_layers(model)[0].kernel.shape
  alignment_analysis.check_subspace_k(cfg.alignment_subspace_k,
                                      int(np.prod(kernel_shape[:-1])))
  for variant, k in finetune_runs(cfg):
    if variant != "scratch":
      try:
        transfer.check_transfer(model, variant, k)
      except ValueError as e:
        raise ConfigError(f"--transfer_layers={k}: {e}") from None


# --- alignment tracking ---------------------------------------------------------------


def first_layer_sigma_x(ctx, source, split):
  """Sigma_x of the first weight layer's input on a split (cached), or None if too big.

  The patches are those of the preprocessed training images, taken with the layer's
  kernel size and stride (a dense first layer sees the whole image).
  """
  cfg = ctx.cfg
  layer = models.weight_layers(build(cfg, 2, 0))[0]
  shape = common.input_shape(cfg, cfg.test_split)
  patch, stride = layer_inputs.input_patches(layer, shape)
  if int(np.prod(patch)) * shape[-1] > MAX_TRACKED_DIM:
    return None
  key = {"split": split, "patch": patch, "stride": stride,
         **{n: getattr(cfg, n) for n in common.DATA_FLAGS if n != "data_dir"},
         "labels": source.__name__, "stats": cfg.upstream_split}

  def compute():
    batches = make_input(ctx, source, training=False)().map(lambda b: b["image"])
    return alignment.patch_covariance(batches, patch, stride)[1]

  return artifacts.cached(ctx.path("cache"), "sigma_x", key, compute, write=ctx.chief,
                          array=True)


def tracked_conv_layers(cfg):
  """Names of the conv layers whose alignment pretraining tracks, first layer first:
  every conv layer when the first weight layer is one, else none."""
  model = build(cfg, 2, 0)
  convs = layer_inputs.conv_layers(model)
  return [layer.name for layer in convs] if models.weight_layers(model)[0] in convs else []


def layer_sample(ctx, source):
  """The first LAYER_SAMPLE_SIZE model-ready images of a split, [N, H, W, C] numpy."""
  images = make_input(ctx, source, training=False)().map(lambda b: b["image"]).unbatch()
  return np.stack(list(images.take(LAYER_SAMPLE_SIZE).as_numpy_iterator()))


def layer_every(cfg):
  """Steps between trackings of deeper layers: about LAYER_TRACK_POINTS of them over
  pretraining, at log steps (multiples of --log_every)."""
  logs = -(-cfg.pretrain_steps // (LAYER_TRACK_POINTS * cfg.log_every))
  return max(logs, 1) * cfg.log_every


def alignment_hooks(ctx, source, split, deeper_layers=False):
  """The alignment hook of a training stage, or none if Sigma_x is too big to track.

  With deeper_layers (pretraining), and a model with conv layers after the first, the
  hook also tracks them on `layer_sample` of the split, every `layer_every` steps.
  """
  sigma_x = first_layer_sigma_x(ctx, source, split)
  if sigma_x is None:
    return []
  deeper = deeper_layers and len(tracked_conv_layers(ctx.cfg)) > 1
  return [hooks.AlignmentHook(
      sigma_x, seed=ctx.cfg.label_seed, subspace_k=ctx.cfg.alignment_subspace_k,
      name=TRACK, layer_images=layer_sample(ctx, source) if deeper else None,
      layer_every=layer_every(ctx.cfg), layer_first=ctx.cfg.log_every,
      max_layer_dim=MAX_TRACKED_DIM)]


# --- stages ---------------------------------------------------------------------------


def pretrain(ctx):
  """Trains on the upstream split with random labels."""
  cfg, folder = ctx.cfg, ctx.path("pretrain")
  noise = data.realized_fraction(upstream_source(cfg))
  logging.info("pretrain: %s %s with %.1f%% of labels changed (%d random classes) -> %s",
               cfg.dataset, cfg.upstream_split, 100 * noise, cfg.upstream_num_classes, folder)
  _, record = trainer.train(
      model_fn=lambda: build(cfg, cfg.upstream_num_classes, cfg.pretrain_seed),
      train_input=lambda start: make_input(ctx, upstream_source, training=True,
                                           seed=cfg.pretrain_seed, start_step=start),
      config=common.train_config(cfg, cfg.pretrain_steps, cfg.pretrain_seed),
      strategy=ctx.strategy, model_dir=folder,
      hooks=alignment_hooks(ctx, upstream_source, cfg.upstream_split, deeper_layers=True))
  if ctx.chief:
    artifacts.mark_done(folder, {**record, "realized_label_noise": noise})


def finetune(ctx):
  """Trains every variant x transfer depth x seed on the downstream split."""
  cfg = ctx.cfg
  pretrained = None
  track = alignment_hooks(ctx, downstream_source, cfg.downstream_split)
  for variant, k in finetune_runs(cfg):
    for seed in cfg.seeds:
      folder = ctx.path("finetune", run_name(variant, k), f"seed{seed}")
      if artifacts.is_done(folder):
        logging.info("finetune: %s seed %d already done; skipping", run_name(variant, k), seed)
        continue
      if variant != "scratch" and pretrained is None:
        pretrained = load_random_label_model(ctx)
      logging.info("finetune: %s seed %d -> %s", run_name(variant, k), seed, folder)

      def model_fn(variant=variant, k=k, seed=seed):
        model = build(cfg, common.num_classes(cfg), seed)
        return transfer.apply_transfer(model, pretrained, variant, k, seed=seed)

      _, record = trainer.train(
          model_fn=model_fn,
          train_input=lambda start, seed=seed: make_input(
              ctx, downstream_source, training=True, seed=seed, start_step=start),
          eval_input=make_input(ctx, test_source, training=False),
          config=common.train_config(cfg, cfg.finetune_steps, seed), strategy=ctx.strategy,
          model_dir=folder, hooks=track)
      if ctx.chief:
        artifacts.mark_done(folder, record)


def _histories(ctx, name):
  return [io.read_jsonl(ctx.path("finetune", name, f"seed{s}", trainer.HISTORY))
          for s in ctx.cfg.seeds]


def variant_results(cfg, variant, k, histories, scratch_steps, num_classes):
  """One run name's curves, steps to target, speed-up and test accuracy over seeds."""
  steps = [curves.steps_to_target(h, cfg.target_accuracy) for h in histories]
  finals = [h[-1]["eval_accuracy"] for h in histories]
  mean, half_width = curves.mean_ci95(np.array(finals)[:, None])
  known = [s for s in steps if s is not None]
  return {
      "variant": variant, "transfer_layers": k, "seeds": list(cfg.seeds),
      "curve": curves.learning_curves(histories),
      "steps_to_target": {"per_seed": steps,
                          "mean": float(np.mean(known)) if len(known) == len(steps) else None},
      "speedup_over_scratch": (curves.speedup_interval(scratch_steps, steps)
                               if scratch_steps is not None else None),
      "final_test_accuracy": {"per_seed": finals, "mean": float(mean[0]),
                              "ci95": float(half_width[0])},
      "worst_loss_over_ln_c": [curves.worst_loss_ratio(h, num_classes) for h in histories],
  }


TRACK_KEYS = ("misalignment", "misalignment_random_basis", "subspace_overlap",
              "subspace_overlap_random", "transfer_function")


def _recorded(history, prefix, keys):
  """"step" and each key's values over the records of `history` that hold `prefix`'s."""
  tracked = [r for r in history if f"{prefix}misalignment" in r]
  return {"step": [r["step"] for r in tracked],
          **{key: [r[prefix + key] for r in tracked] for key in keys}}


def alignment_track(history, sigma_x, layer_names=()):
  """The alignment values a run's history recorded (see hooks.AlignmentHook).

  Args:
    history: the run's records.
    sigma_x: the first layer's Sigma_x, the hook's.
    layer_names: the model's conv layers in forward order, the first one the layer of
      sigma_x; when given, "layers" maps each conv layer with records to its track
      (`results.LayerTrack`): the first layer's from the unprefixed keys, each deeper
      one's from its `hooks.layer_key` keys, with its own steps and Sigma_x per step.
  """
  sigma = np.sqrt(np.clip(np.linalg.eigvalsh(sigma_x)[::-1], 0, None)).tolist()
  track = {"sigma": sigma, **_recorded(history, f"{TRACK}/", TRACK_KEYS)}
  if not layer_names:
    return track
  first = {**track, "dim": len(sigma), "sigma": [sigma] * len(track["step"])}
  layers = {layer_names[0]: first}
  for index, name in enumerate(layer_names[1:], start=1):
    deeper = _recorded(history, f"{TRACK}/{hooks.layer_key(index)}/", TRACK_KEYS + ("sigma",))
    if deeper["step"]:
      layers[name] = {**deeper, "dim": len(deeper["sigma"][0])}
  return {**track, "layers": layers, "layer_order": list(layers)}


def analyze(ctx):
  """Learning curves, steps to target, speed-ups, alignment tracks -> results/transfer.json."""
  cfg = ctx.cfg
  runs = finetune_runs(cfg)
  scratch_steps = None
  if "scratch" in cfg.variants:
    scratch_steps = [curves.steps_to_target(h, cfg.target_accuracy)
                     for h in _histories(ctx, "scratch")]
  summary = artifacts.done_summary(ctx.path("pretrain"))
  tracks = {}
  sigma_up = first_layer_sigma_x(ctx, upstream_source, cfg.upstream_split)
  if sigma_up is not None:
    tracks["upstream"] = alignment_track(io.read_jsonl(ctx.path("pretrain", trainer.HISTORY)),
                                         sigma_up, tracked_conv_layers(cfg))
    if "scratch" in cfg.variants:
      tracks["downstream"] = alignment_track(
          _histories(ctx, "scratch")[0],
          first_layer_sigma_x(ctx, downstream_source, cfg.downstream_split))
  payload = {
      "target_accuracy": cfg.target_accuracy,
      "pretrain": {"steps": summary["step"], "final_train_accuracy": summary["accuracy"],
                   "realized_label_noise": summary["realized_label_noise"]},
      "variants": {run_name(v, k): variant_results(cfg, v, k, _histories(ctx, run_name(v, k)),
                                                   scratch_steps, common.num_classes(cfg))
                   for v, k in runs},
      "tracks": tracks,
  }
  if ctx.chief:
    path = results.write(ctx.cfg.workdir, kind="experiment", name="transfer",
                         config={n: getattr(cfg, n) for n in OWN_FLAGS}, payload=payload)
    logging.info("analyze: wrote %s", path)


def stages(cfg):
  del cfg
  return [
      Stage("pretrain", "pretrain", pretrain, reads=PRETRAIN_FLAGS, outputs=("pretrain",),
            trains=True),
      Stage("finetune", "finetune", finetune, reads=FINETUNE_FLAGS, after=("pretrain",),
            outputs=("finetune",), trains=True),
      Stage("analyze", "analyze", analyze, reads=ANALYZE_FLAGS, after=("pretrain", "finetune"),
            outputs=(f"{results.RESULTS_DIR}/transfer.json",)),
  ]


# --- models and data for analyses -------------------------------------------------------


def _first_transferred(cfg):
  names = [run_name(v, k) for v, k in finetune_runs(cfg) if v != "scratch"]
  return names[:1]


def model_sources(cfg):
  """The random-label network and each finetuned run (its first seed)."""
  seed = cfg.seeds[0]
  sources = {"random_labels": registry.ModelSource("pretrain", load_random_label_model)}
  for variant, k in finetune_runs(cfg):
    name = run_name(variant, k)
    sources[name] = registry.ModelSource(
        "finetune", lambda ctx, name=name: load_finetuned(ctx, name, seed))
  return sources


def default_analyses(cfg):
  scratch = ["scratch"] if "scratch" in cfg.variants else []
  return {"alignment": ("random_labels", *scratch),
          "attribution": tuple(scratch + _first_transferred(cfg))}


def analysis_models(cfg, analysis):
  """Scratch and the first transferred run, side by side; and the random-label network,
  unless the analysis reads the models' outputs as the real classes (`needs_labels`)."""
  scratch = ["scratch"] if "scratch" in cfg.variants else []
  random_labels = [] if analyses.get(analysis).needs_labels else ["random_labels"]
  return (*random_labels, *scratch, *_first_transferred(cfg))


def analysis_data(ctx):
  cfg = ctx.cfg
  size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
  return AnalysisData(
      dataset=cfg.dataset, split=cfg.test_split,
      source=functools.partial(test_source, cfg),
      batch_ops=common.batch_ops(ctx, training=False, stats_split=cfg.upstream_split),
      batch_size=cfg.batch_size, num_classes=common.num_classes(cfg), image_size=size)


EXPERIMENT = registry.register(registry.Experiment(
    name="transfer",
    title="What the networks learned: transfer after random-label pretraining",
    flags=(*common.DATA_FLAGS, *common.MODEL_FLAGS, *common.TRAIN_FLAGS, *OWN_FLAGS),
    int_lists=("seeds", "transfer_layers"),
    stages=stages, check=check, sections=transfer_report.sections,
    models=model_sources, analyses=default_analyses, analysis_models=analysis_models,
    analysis_data=analysis_data, data_flags=DATA_FOR_ANALYSES))
