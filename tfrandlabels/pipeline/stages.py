"""The pipeline's stages: pretrain -> finetune -> analyze -> report.

Each stage reads the run's settings (`cfg`, the validated flags of pipelines/run.py),
writes under `cfg.workdir`, and marks each finished unit of work with an atomic DONE
marker, so rerunning the same command skips what is finished and resumes the rest:

  workdir/flags.json                        the flags of the run
  workdir/data_stats.json                   per-channel mean/std (--normalize=standardize)
  workdir/pretrain/                         random-label pretraining (checkpoints, history)
  workdir/finetune/<variant>[_k<k>]/seed<s>/ one downstream run per variant, k and seed
  workdir/alignment/                        Sigma_x of the first layer's input per split
  workdir/results.json, workdir/report.html, workdir/figures/*.png
"""
import dataclasses
import functools
import hashlib
import json
import os

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from tfrandlabels import data
from tfrandlabels import io
from tfrandlabels import models
from tfrandlabels.data import synthetic
from tfrandlabels.analysis import alignment
from tfrandlabels.analysis import attribution
from tfrandlabels.analysis import curves
from tfrandlabels.pipeline import alignment_figures
from tfrandlabels.pipeline import artifacts
from tfrandlabels.pipeline import report as report_lib
from tfrandlabels.training import hooks
from tfrandlabels.training import trainer
from tfrandlabels.training import transfer

# Sigma_x is tracked during training only when the first layer sees at most this many
# inputs per unit (a 3x3x3 conv sees 27; a dense layer on a 32x32x3 image 3072).
MAX_TRACKED_DIM = 1024
VARIANT_ORDER = ("scratch", "pretrained", "no_rescaling", "covariance")


@dataclasses.dataclass
class Context:
  """What every stage needs: the settings, the strategy, and whether to write."""
  cfg: object
  strategy: tf.distribute.Strategy
  chief: bool = True

  def path(self, *parts):
    return os.path.join(self.cfg.workdir, *parts)


def run_name(variant, k):
  return "scratch" if variant == "scratch" else f"{variant}_k{k}"


def finetune_runs(cfg):
  """(variant, k) pairs to finetune: scratch once, every other variant per k."""
  runs = [("scratch", 0)] if "scratch" in cfg.variants else []
  return runs + [(v, k) for v in cfg.variants if v != "scratch" for k in cfg.transfer_layers]


# --- data -------------------------------------------------------------------------


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
    ds = data.corrupt_labels(ds, fraction=1.0, num_classes=num_classes(cfg),
                             seed=cfg.label_seed + 1, mode="uniform")
  return ds


def test_source(cfg):
  return data.load(cfg.dataset, cfg.test_split, cfg.data_dir)


@functools.lru_cache(maxsize=None)
def _num_classes(dataset, data_dir):
  return data.num_classes(dataset, data_dir)


def num_classes(cfg):
  return _num_classes(cfg.dataset, cfg.data_dir)


def input_shape(cfg):
  return _input_shape(cfg.dataset, cfg.test_split, cfg.data_dir, cfg.image_size)


@functools.lru_cache(maxsize=None)
def _input_shape(dataset, split, data_dir, image_size):
  shape = data.load(dataset, split, data_dir).element_spec["image"].shape
  if image_size:
    return (image_size, image_size, shape[-1])
  if None in shape:
    raise ValueError(f"--dataset={dataset}: images vary in size; set --image_size")
  return tuple(shape)


def normalization(ctx):
  """Mean and std (per channel, uint8 units) the images are normalized with.

  `--normalize=unit` scales to [0, 1]; `standardize` uses the upstream images'
  per-channel moments, computed once and saved.
  """
  if ctx.cfg.normalize == "unit":
    return {"mean": [0.0], "std": [255.0]}
  path = ctx.path("data_stats.json")
  stats = io.read_json(path)
  if stats is None:
    mean, std = data.channel_moments(data.load(ctx.cfg.dataset, ctx.cfg.upstream_split,
                                               ctx.cfg.data_dir))
    stats = {"mean": mean.tolist(), "std": std.tolist()}
    if ctx.chief:
      io.write_json(path, stats)
  return stats


def make_input(ctx, source, *, training, seed=0, start_step=0):
  cfg = ctx.cfg
  stats = normalization(ctx)
  size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
  return data.make_input_fn(
      functools.partial(source, cfg), global_batch_size=cfg.batch_size, training=training,
      seed=seed, start_step=start_step, augment=cfg.augment and training,
      mean=stats["mean"], std=stats["std"], image_size=size,
      drop_remainder=training or cfg.strategy == "tpu" or bool(cfg.tpu))


# --- models -------------------------------------------------------------------------


def build(cfg, classes, seed):
  return models.build_model(cfg.model, classes, input_shape(cfg), init_scale=cfg.init_scale,
                            seed=seed)


def train_config(cfg, steps, seed):
  return trainer.TrainConfig(
      steps=steps, batch_size=cfg.batch_size, optimizer=cfg.optimizer,
      learning_rate=cfg.learning_rate, momentum=cfg.momentum, schedule=cfg.schedule,
      weight_decay=cfg.weight_decay, precision=cfg.precision, deterministic=cfg.deterministic,
      seed=seed, steps_per_loop=cfg.steps_per_loop, log_every=cfg.log_every,
      checkpoint_every=cfg.checkpoint_every, eval_every=cfg.eval_every)


def pretrained_model(ctx):
  model = build(ctx.cfg, ctx.cfg.upstream_num_classes, ctx.cfg.pretrain_seed)
  return trainer.load_weights(model, ctx.path("pretrain"))


# --- alignment tracking ---------------------------------------------------------------


def first_layer_sigma_x(ctx, source, name):
  """Sigma_x of the first weight layer's input on a split (saved), or None if too big.

  The patches are those of the preprocessed images the model trains on, taken with the
  layer's kernel size and stride (a dense first layer sees the whole image).
  """
  path = ctx.path("alignment", f"sigma_x_{name}.npy")
  if tf.io.gfile.exists(path):
    return artifacts.load_array(path)
  layer = models.weight_layers(build(ctx.cfg, 2, 0))[0]
  shape = input_shape(ctx.cfg)
  if isinstance(layer, keras.layers.Conv2D):
    patch, stride = layer.kernel_size, layer.strides
  else:
    patch, stride = shape[:2], 1
  if int(np.prod(patch)) * shape[-1] > MAX_TRACKED_DIM:
    return None
  batches = make_input(ctx, source, training=False)().map(lambda b: b["image"])
  _, sigma_x = alignment.patch_covariance(batches, patch, stride)
  if ctx.chief:
    artifacts.save_array(path, sigma_x)
  return sigma_x


def alignment_hooks(ctx, source, name):
  sigma_x = first_layer_sigma_x(ctx, source, name)
  return [] if sigma_x is None else [hooks.AlignmentHook(sigma_x, seed=ctx.cfg.label_seed)]


# --- stages -------------------------------------------------------------------------


def pretrain(ctx):
  """Trains on the upstream split with random labels."""
  cfg, folder = ctx.cfg, ctx.path("pretrain")
  if artifacts.is_done(folder):
    logging.info("pretrain: already done in %s; skipping", folder)
    return
  noise = data.realized_fraction(upstream_source(cfg))
  logging.info("pretrain: %s %s with %.1f%% of labels changed (%d random classes) -> %s",
               cfg.dataset, cfg.upstream_split, 100 * noise, cfg.upstream_num_classes, folder)
  _, record = trainer.train(
      model_fn=lambda: build(cfg, cfg.upstream_num_classes, cfg.pretrain_seed),
      train_input=lambda start: make_input(ctx, upstream_source, training=True,
                                           seed=cfg.pretrain_seed, start_step=start),
      config=train_config(cfg, cfg.pretrain_steps, cfg.pretrain_seed),
      strategy=ctx.strategy, model_dir=folder,
      hooks=alignment_hooks(ctx, upstream_source, "upstream"))
  if ctx.chief:
    artifacts.mark_done(folder, {**record, "realized_label_noise": noise})


def finetune(ctx):
  """Trains every variant x transfer depth x seed on the downstream split."""
  cfg = ctx.cfg
  pretrained = None
  track = alignment_hooks(ctx, downstream_source, "downstream")
  for variant, k in finetune_runs(cfg):
    for seed in cfg.seeds:
      folder = ctx.path("finetune", run_name(variant, k), f"seed{seed}")
      if artifacts.is_done(folder):
        logging.info("finetune: %s seed %d already done; skipping", run_name(variant, k), seed)
        continue
      if variant != "scratch" and pretrained is None:
        pretrained = pretrained_model(ctx)
      logging.info("finetune: %s seed %d -> %s", run_name(variant, k), seed, folder)

      def model_fn(variant=variant, k=k, seed=seed):
        model = build(cfg, num_classes(cfg), seed)
        return transfer.apply_transfer(model, pretrained, variant, k, seed=seed)

      _, record = trainer.train(
          model_fn=model_fn,
          train_input=lambda start, seed=seed: make_input(
              ctx, downstream_source, training=True, seed=seed, start_step=start),
          eval_input=make_input(ctx, test_source, training=False),
          config=train_config(cfg, cfg.finetune_steps, seed), strategy=ctx.strategy,
          model_dir=folder, hooks=track)
      if ctx.chief:
        artifacts.mark_done(folder, record)


def _histories(ctx, variant, k):
  return [io.read_jsonl(ctx.path("finetune", run_name(variant, k), f"seed{s}",
                                 trainer.HISTORY)) for s in ctx.cfg.seeds]


def _variant_results(ctx, variant, k, scratch_steps):
  cfg = ctx.cfg
  histories = _histories(ctx, variant, k)
  steps = [curves.steps_to_target(h, cfg.target_accuracy) for h in histories]
  finals = [h[-1]["eval_accuracy"] for h in histories]
  mean, half_width = curves.mean_ci95(np.array(finals)[:, None])
  known = [s for s in steps if s is not None]
  return {
      "variant": variant, "transfer_layers": k, "seeds": list(cfg.seeds),
      "curve": curves.learning_curves(histories),
      "steps_to_target": {"per_seed": steps,
                          "mean": float(np.mean(known)) if len(known) == len(steps) else None},
      "speedup_over_scratch": (curves.speedup(scratch_steps, steps)
                               if scratch_steps is not None else None),
      "final_test_accuracy": {"per_seed": finals, "mean": float(mean[0]),
                              "ci95": float(half_width[0])},
  }


def _alignment_track(history, sigma_x):
  """The alignment values a run's history recorded (see hooks.AlignmentHook).

  `sigma` holds the square roots of Sigma_x's eigenvalues (descending): the x axis of
  the recorded transfer functions.
  """
  tracked = [r for r in history if "misalignment" in r]
  sigma = np.sqrt(np.clip(np.linalg.eigvalsh(sigma_x)[::-1], 0, None))
  return {"sigma": sigma.tolist(), "step": [r["step"] for r in tracked],
          "misalignment": [r["misalignment"] for r in tracked],
          "misalignment_random_basis": [r["misalignment_random_basis"] for r in tracked],
          "transfer_function": [r["transfer_function"] for r in tracked]}


def alignment_results(ctx):
  """First-layer alignment: tracks over training, sigma axis, eigenfilters (Fig. 3-4)."""
  sigma_x = first_layer_sigma_x(ctx, upstream_source, "upstream")
  if sigma_x is None:
    return None
  first = models.weight_layers(pretrained_model(ctx))[0]
  kernel = first.kernel.numpy()
  sigma_w = alignment.filter_covariance(kernel)
  shape = kernel.shape[:-1]
  count = min(8, sigma_x.shape[0])
  result = {
      "layer": first.name,
      "upstream": _alignment_track(io.read_jsonl(ctx.path("pretrain", trainer.HISTORY)),
                                   sigma_x),
      "eigenfilters": {
          "data": alignment.top_eigenfilters(sigma_x, count, shape).tolist(),
          "pretrained": alignment.top_eigenfilters(sigma_w, count, shape).tolist()},
  }
  if "scratch" in ctx.cfg.variants:
    seed = ctx.cfg.seeds[0]
    result["downstream"] = _alignment_track(io.read_jsonl(ctx.path(
        "finetune", "scratch", f"seed{seed}", trainer.HISTORY)),
        first_layer_sigma_x(ctx, downstream_source, "downstream"))
  return result


def analyze(ctx):
  """Learning curves, steps to the target accuracy and speed-ups -> results.json."""
  cfg = ctx.cfg
  runs = finetune_runs(cfg)
  inputs = {f"{run_name(v, k)}/seed{s}": artifacts.done_summary(
      ctx.path("finetune", run_name(v, k), f"seed{s}")) for v, k in runs for s in cfg.seeds}
  missing = sorted(name for name, summary in inputs.items() if summary is None)
  if missing:
    raise ValueError(f"--stages=analyze: finetune runs {missing} are not finished; run "
                     "--stages=finetune first")
  folder = ctx.path("analyze")
  if artifacts.done_summary(folder) == {"inputs": inputs} and tf.io.gfile.exists(
      ctx.path("results.json")):
    logging.info("analyze: results.json is up to date; skipping")
    return
  scratch_steps = None
  if "scratch" in cfg.variants:
    scratch_steps = [curves.steps_to_target(h, cfg.target_accuracy)
                     for h in _histories(ctx, "scratch", 0)]
  pretrain_summary = artifacts.done_summary(ctx.path("pretrain")) or {}
  results = {
      "config": {key: value for key, value in sorted(vars(cfg).items())},
      "target_accuracy": cfg.target_accuracy,
      "pretrain": {"steps": pretrain_summary.get("step"),
                   "final_train_accuracy": pretrain_summary.get("accuracy"),
                   "realized_label_noise": pretrain_summary.get("realized_label_noise")},
      "variants": {run_name(v, k): _variant_results(ctx, v, k, scratch_steps) for v, k in runs},
      "alignment": alignment_results(ctx) if pretrain_summary else None,
  }
  if ctx.chief:
    io.write_json(ctx.path("results.json"), results)
    artifacts.mark_done(folder, {"inputs": inputs})
  logging.info("analyze: wrote %s", ctx.path("results.json"))


def _attribution(ctx, results):
  """SmoothGrad and Grad-CAM++ maps of a few test images, scratch vs transferred."""
  cfg = ctx.cfg
  examples = list(test_source(cfg).take(cfg.attribution_images).as_numpy_iterator())
  images = np.stack([e["image"] for e in examples])
  labels = [int(e["label"]) for e in examples]
  if cfg.image_size:
    images = tf.cast(tf.round(tf.image.resize(images, (cfg.image_size,) * 2)), tf.uint8).numpy()
  stats = normalization(ctx)
  inputs = data.pipeline.make_preprocess(mean=stats["mean"], std=stats["std"])(images).numpy()
  seed = cfg.seeds[0]
  # Scratch next to the paper's main variant (or whichever transfer variant ran),
  # each at its smallest transfer depth.
  transferred = sorted((VARIANT_ORDER.index(v["variant"]), v["transfer_layers"], n)
                       for n, v in results["variants"].items() if n != "scratch")
  names = [n for n in results["variants"] if n == "scratch"] + [t[2] for t in transferred[:1]]
  maps = {}
  for name in names:
    model = trainer.load_weights(build(cfg, num_classes(cfg), seed),
                                 ctx.path("finetune", name, f"seed{seed}"))
    maps[name] = {"saliency": attribution.saliency_maps(model, inputs, labels, seed=seed),
                  "gradcam++": attribution.gradcam_plus_plus(model, inputs, labels)}
  return {"images": images, "labels": labels, "class_names": None, "maps": maps}


def report(ctx):
  """Renders results.json, attribution maps and alignment figures into report.html."""
  results = io.read_json(ctx.path("results.json"))
  gaussian_summary = io.read_json(ctx.path("gaussian.json"))
  if results is None and gaussian_summary is None:
    raise ValueError("--stages=report: no results.json or gaussian.json in --workdir; run "
                     "--stages=analyze (or gaussian) first")
  if results is None:
    results = {"config": dict(sorted(vars(ctx.cfg).items())), "pretrain": {},
               "target_accuracy": ctx.cfg.target_accuracy, "variants": {}}
  results = {**results, "gaussian": gaussian_summary}
  folder = ctx.path("report")
  fingerprint = {"results": hashlib.sha256(
      json.dumps(results, sort_keys=True).encode()).hexdigest()}
  if artifacts.done_summary(folder) == fingerprint and tf.io.gfile.exists(
      ctx.path("report.html")):
    logging.info("report: %s is up to date; skipping", ctx.path("report.html"))
    return
  if not ctx.chief:
    return
  path = report_lib.write_report(
      ctx.cfg.workdir, results,
      attribution=_attribution(ctx, results) if results["variants"] else None,
      alignment_figures=alignment_figures.figures(results.get("alignment"),
                                                  results["gaussian"]))
  artifacts.mark_done(folder, fingerprint)
  logging.info("report: wrote %s", path)


def parse_gaussian_setting(text):
  """Parses DIM:LOW-HIGH:WIDTHS:SAMPLES, e.g. 30:0.1-3.0:2048x256:10000.

  Sigma_x = diag(LOW, ..., HIGH) in DIM equal steps; WIDTHS are the hidden layers.
  """
  try:
    dim, ladder, widths, samples = text.split(":")
    low, high = (float(v) for v in ladder.split("-"))
    setting = {"dim": int(dim), "low": low, "high": high,
               "widths": [int(w) for w in widths.split("x")], "samples": int(samples)}
  except ValueError:
    raise ValueError(f"--gaussian_settings: {text!r} is not DIM:LOW-HIGH:WIDTHS:SAMPLES, "
                     "e.g. 30:0.1-3.0:2048x256:10000") from None
  synthetic.variance_ladder(setting["dim"], low, high)
  if min(setting["widths"]) < 1 or setting["samples"] < 1:
    raise ValueError(f"--gaussian_settings: {text!r} needs widths and samples >= 1")
  return setting


def gaussian(ctx):
  """Maennel et al., Fig. 4 left / App. E.1: Gaussian inputs, random labels, an MLP.

  For each of --gaussian_settings trains `mlp` on x ~ N(0, diag(LOW..HIGH)) with
  labels uniform over 10 classes and tracks the first layer's transfer function
  f(sigma_i) = sqrt(v_i' Sigma_w v_i); writes workdir/gaussian.json.
  """
  cfg = ctx.cfg
  summary = {}
  for text in cfg.gaussian_settings:
    setting = parse_gaussian_setting(text)
    name = "d{dim}_w{w}_n{samples}".format(w="x".join(map(str, setting["widths"])), **setting)
    folder = ctx.path("gaussian", name)
    variances = synthetic.variance_ladder(setting["dim"], setting["low"], setting["high"])
    source = functools.partial(synthetic.gaussian_random_labels, variances,
                               setting["samples"], 10, cfg.label_seed)
    if artifacts.is_done(folder):
      logging.info("gaussian: %s already done; skipping", name)
    else:
      logging.info("gaussian: %s -> %s", name, folder)
      _, record = trainer.train(
          model_fn=lambda s=setting: models.build_model(
              "mlp", 10, (s["dim"],), widths=s["widths"], init_scale=cfg.init_scale,
              seed=cfg.pretrain_seed),
          train_input=lambda start, source=source: data.make_input_fn(
              source, global_batch_size=cfg.batch_size, training=True,
              seed=cfg.pretrain_seed, start_step=start, mean=[0.0], std=[1.0]),
          config=train_config(cfg, cfg.gaussian_steps, cfg.pretrain_seed),
          strategy=ctx.strategy, model_dir=folder,
          hooks=[hooks.AlignmentHook(np.diag(variances), seed=cfg.label_seed)])
      if ctx.chief:
        artifacts.mark_done(folder, record)
    track = _alignment_track(io.read_jsonl(os.path.join(folder, trainer.HISTORY)),
                             np.diag(variances))
    summary[name] = {**setting, **track,
                     "final_train_accuracy": artifacts.done_summary(folder)["accuracy"]}
  if ctx.chief:
    io.write_json(ctx.path("gaussian.json"), summary)
