"""Analysis `dominant_frequencies`: each class's dominant frequency map (DFM), the
frequencies a model relies on to recognize the class (Wang et al., ICCV 2023, Sec. 3.2).

For class c, every frequency (with its conjugate partner, on all channels) is removed
from the first `--dominant_frequencies_images` images of class c in the split, and
the increase of the model's mean cross-entropy is the frequency's score; the DFM
keeps the top `--dominant_frequencies_top_fraction` (paper: 5%). The search is
batched (`spectra.class_frequency_importance`): one FFT of the images, then many
removals per forward pass, `--dominant_frequencies_batch` images at a time, all
classes' images in every pass. When the model's input feeds a convolution alone, the
frequencies are removed after it (`split_first_convolution`): that layer is linear
before its activation, so it runs on a few patterns per frequency, not on every
filtered image.

Logits or probabilities: the loss needs logits. A model whose outputs on the class's
images are all probability rows (in [0, 1], summing to 1: it ends in a softmax) is
scored on log(max(p, 1e-7)) instead; those are logits of the same softmax, so the
loss is unchanged except that a float32 softmax that rounds a probability to 0 caps
its loss at 16.1 nats. The results record which kind the model gave (`outputs`).

On a planted-band data set (`planted_low`, `planted_mid`, `planted_high`) each DFM is
compared with its class's planted frequencies: the share of the DFM inside the band,
and the share of the band inside the DFM. A band smaller than the DFM caps the first
below 1 (the report gives the cap).
"""
import collections
import dataclasses
import hashlib

from absl import flags
import keras
import numpy as np
import tensorflow as tf

from tfrandlabels.analyses import class_spectra
from tfrandlabels.analyses import registry
from tfrandlabels.analysis import spectra
from tfrandlabels.data import frequency
from tfrandlabels.errors import ConfigError
from tfrandlabels.pipeline import flags as flag_lib
from tfrandlabels.pipeline import frequency_plots
from tfrandlabels.pipeline import report

flags.DEFINE_float("dominant_frequencies_top_fraction", 0.05, "Analysis dominant_frequencies: "
                   "share of the frequencies a class's DFM keeps (paper: 0.05).")
flags.DEFINE_integer("dominant_frequencies_images", 100, "Analysis dominant_frequencies: "
                     "images per class the frequencies are removed from (the first ones "
                     "of the split).")
flags.DEFINE_integer("dominant_frequencies_batch", 1024, "Analysis dominant_frequencies: "
                     "images per forward pass of the search.")
flag_lib.check("dominant_frequencies_top_fraction", lambda v: 0 < v <= 1, "must be in (0, 1]")
flag_lib.check_at_least(("dominant_frequencies_images", "dominant_frequencies_batch"), 1)

FLAGS = ("dominant_frequencies_top_fraction", "dominant_frequencies_images",
         "dominant_frequencies_batch")
PROBABILITY_FLOOR = 1e-7
_MEMO_SIZE = 4


@dataclasses.dataclass(frozen=True)
class ClassDfms:
  """The DFMs of a model on a split.

  Attributes:
    dfms: bool [C, H, W], centred; all False for a class without images.
    images: images of each class the search used, [C].
    outputs: "logits" or "probabilities", what the model returns.
  """
  dfms: np.ndarray
  images: np.ndarray
  outputs: str


def outputs_probabilities(outputs):
  """Whether every row of `outputs` [N, C] is a probability vector (a softmax's)."""
  outputs = np.asarray(outputs, np.float64)
  return bool(outputs.size and outputs.min() >= 0 and outputs.max() <= 1 and
              np.allclose(outputs.sum(axis=-1), 1, atol=1e-3))


def logits_fn(call, outputs):
  """fn(images) -> logits, and "logits" or "probabilities": what the model returns.

  Args:
    call: fn(images) -> the model's outputs.
    outputs: the model's outputs on some images, to judge their kind by.
  """
  if not outputs_probabilities(outputs):
    return call, "logits"
  return (lambda x: tf.math.log(tf.maximum(tf.cast(call(x), tf.float32), PROBABILITY_FLOOR)),
          "probabilities")


def split_first_convolution(model):
  """(stem, head) with head(stem(x)) == model(x, training=False), stem affine; or None.

  The split exists when the model is a functional or Sequential Keras model whose input
  feeds one layer only, a channels-last `keras.layers.Conv2D`: the stem is that convolution plus its
  bias, in float32, and the head its activation followed by the rest of the model.
  `spectra.frequency_importance` then removes frequencies after the first
  convolution, which it runs on a few patterns per frequency instead of on every
  filtered image.
  """
  inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
  if not inputs or len(inputs) != 1 or not outputs or len(outputs) != 1:
    return None
  consumers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
               and any(t is inputs[0] for t in keras.tree.flatten(layer.input))]
  if (len(consumers) != 1 or not isinstance(consumers[0], keras.layers.Conv2D)
      or consumers[0].data_format != "channels_last"):
    return None
  conv = consumers[0]
  rest = keras.Model(conv.output, outputs[0])

  @tf.function(reduce_retracing=True)
  def stem(images):
    responses = conv.convolution_op(tf.cast(images, tf.float32), tf.cast(conv.kernel, tf.float32))
    return responses + tf.cast(conv.bias, tf.float32) if conv.use_bias else responses

  @tf.function(reduce_retracing=True)
  def head(responses):
    return rest(conv.activation(responses), training=False)

  return stem, head


def class_images(data, per_class):
  """The first `per_class` model-ready images of each class of the split, [C] arrays.

  Raises:
    ConfigError: the split holds no image.
  """
  found = [[] for _ in range(data.num_classes)]
  shape = None
  for batch in data.batches().as_numpy_iterator():
    shape = batch["image"].shape[1:]
    for image, label in zip(batch["image"], batch["label"]):
      if len(found[label]) < per_class:
        found[label].append(image)
    if all(len(images) == per_class for images in found):
      break
  if shape is None:
    raise ConfigError(f"{data.dataset} {data.split} holds no images; choose a split with some")
  return [np.stack(images) if images else np.zeros((0, *shape), np.float32)
          for images in found]


def _digest(arrays):
  digest = hashlib.sha256()
  for array in arrays:
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()


# The pipeline runs dominant_frequencies and shortcut_test on the same model and images
# in one process; the search, their main cost, is done once. Keyed by the weights, the
# images, the model's outputs on them (which tell architectures apart) and the
# settings, so a hit is exactly what a new search would return.
_MEMO = collections.OrderedDict()


def class_dfms(model, data, *, top_fraction, images, batch):
  """The DFM of every class: the `top_fraction` of frequencies whose removal from the
  first `images` images of the class raises the model's loss most.

  Args:
    model: a Keras model of model-ready images, outputting logits or probabilities.
    data: the `AnalysisData` of the split.
    top_fraction: share of the frequencies kept, in (0, 1].
    images: images per class.
    batch: images per forward pass.

  Returns:
    `ClassDfms`.
  """
  per_class = class_images(data, images)
  call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
  probe = np.concatenate(per_class)
  probe_outputs = np.concatenate([call(probe[i:i + batch]) for i in range(0, len(probe), batch)])
  key = (_digest(model.get_weights()), _digest(per_class), _digest([probe_outputs]),
         top_fraction)
  if key in _MEMO:
    return _MEMO[key]
  split = split_first_convolution(model)
  stem, head = split if split else (None, call)
  predict, outputs = logits_fn(head, probe_outputs)
  labels = np.repeat(np.arange(data.num_classes), [len(x) for x in per_class])
  importance = spectra.class_frequency_importance(predict, probe, labels, data.num_classes,
                                                  chunk=max(1, batch // len(probe)), stem=stem)
  dfms = np.zeros((data.num_classes, *probe.shape[1:3]), bool)
  for label, class_batch in enumerate(per_class):
    if len(class_batch):
      dfms[label] = spectra.dominant_frequency_map(importance[label], top_fraction)
  result = ClassDfms(dfms=dfms, images=np.array([len(x) for x in per_class]), outputs=outputs)
  _MEMO[key] = result
  while len(_MEMO) > _MEMO_SIZE:
    _MEMO.popitem(last=False)
  return result


def radial_band(dfm):
  """'low', 'mid' or 'high': the radial third (`class_spectra.radial_bands`) that holds
  most of a DFM's frequencies."""
  bands = class_spectra.radial_bands(*dfm.shape)
  return max(bands, key=lambda name: (dfm & bands[name]).sum())


def class_metrics(dfm, band):
  """What the report says about one class's DFM (bool [H, W]) and its planted band."""
  positions = np.argwhere(dfm)
  radius = frequency.radius_grid(dfm.shape)
  entry = {"dfm": positions.tolist(), "size": int(dfm.sum()), "radial_band": radial_band(dfm),
           "mean_radius": float(radius[dfm].mean())}
  if band is not None:
    entry.update(band_size=int(band.sum()),
                 in_band_fraction=spectra.class_band_fraction(dfm, band),
                 band_recall=float((dfm & band).sum() / band.sum()))
  return entry


def settings_of(settings):
  """The keyword arguments of `class_dfms` from an analysis's settings namespace."""
  return {"top_fraction": settings.dominant_frequencies_top_fraction,
          "images": settings.dominant_frequencies_images,
          "batch": settings.dominant_frequencies_batch}


def run(model, data, settings):
  found = class_dfms(model, data, **settings_of(settings))
  bands = class_spectra.planted_bands(data.dataset, *found.dfms.shape[1:])
  classes = [None if not count else
             {"class": c, "images": int(count),
              **class_metrics(found.dfms[c], None if bands is None else bands[c])}
             for c, count in enumerate(found.images)]
  rows = [("DFM", found.dfms, "gray", (0, 1))]
  caption = (f"Dominant frequency map (top {settings.dominant_frequencies_top_fraction:.0%} of "
             f"the frequencies by loss increase when removed) of each class on {data.dataset} "
             f"{data.split}, centred spectrum (zero frequency in the middle, radius = "
             "frequency in cycles per image).")
  if bands is not None:
    rows.append(("planted band", bands, "gray", (0, 1)))
    caption += " Bottom row: the class's planted frequencies."
  return registry.Output(
      metrics={**data.describe(), "outputs": found.outputs,
               "top_fraction": settings.dominant_frequencies_top_fraction,
               "size": list(found.dfms.shape[1:]), "classes": classes},
      plots={"dfm": (caption, report.figure_png(frequency_plots.class_maps(rows)))})


def _planted_summary(label, metrics, found):
  """One sentence on how well the DFMs of a planted set recover the planted bands."""
  inside = np.mean([e["in_band_fraction"] for e in found])
  recall = np.mean([e["band_recall"] for e in found])
  ceiling = np.mean([min(1.0, e["band_size"] / e["size"]) for e in found])
  total = np.prod(metrics["size"])
  chance = np.mean([e["band_size"] for e in found]) / total
  return (f"{label}: on average {inside:.0%} of a class's DFM lies in its "
          f"planted band (at most {ceiling:.0%}: bands of "
          f"{np.mean([e['band_size'] for e in found]):.0f} frequencies, DFMs of "
          f"{np.mean([e['size'] for e in found]):.0f}; a random map: {chance:.0%}), and the "
          f"DFMs hold {recall:.0%} of the band frequencies.")


def section(payload, figures):
  blocks, summary, radii = [], [], {}
  for name, entry in payload["models"].items():
    metrics = entry["metrics"]
    label = registry.model_label(name, metrics["dataset"])
    found = [e for e in metrics["classes"] if e is not None]
    radii[name] = np.mean([e["mean_radius"] for e in found])
    planted = "in_band_fraction" in found[0]
    header = ["class", "images", "DFM frequencies", "mostly", "mean radius"]
    if planted:
      header += ["in planted band", "band recovered"]
      summary.append(_planted_summary(label, metrics, found))
    else:
      counts = collections.Counter(e["radial_band"] for e in found)
      summary.append(f"{label}: the DFMs are mostly " + ", ".join(
          f"{band} frequencies for {counts[band]} classes" for band in class_spectra.RADIAL_BANDS
          if counts[band]) + ".")
    rows = [[e["class"], e["images"], e["size"], e["radial_band"], f"{e['mean_radius']:.1f}"]
            + ([f"{e['in_band_fraction']:.0%}", f"{e['band_recall']:.0%}"] if planted else [])
            for e in found]
    blocks += [f"Model {name} ({metrics['dataset']} {metrics['split']}, model outputs "
               f"{metrics['outputs']}): 'mostly' is the radial third (of the Nyquist radius) "
               "holding most of the DFM.",
               report.Table(header=header, rows=rows, numeric=tuple(range(1, len(header))))]
    blocks += list(figures[name])
  summary.append("Mean radius of the DFM frequencies, averaged over the classes (cycles per "
                 "image; larger: the model relies on higher frequencies): " + ", ".join(
                     f"{model} {radius:.1f}" for model, radius in radii.items()) + ".")
  return report.Section(title="Dominant frequency maps", summary=summary, blocks=blocks)


ANALYSIS = registry.register(registry.Analysis(
    name="dominant_frequencies", title="Dominant frequency maps", flags=FLAGS, run=run,
    section=section, needs_labels=True))
