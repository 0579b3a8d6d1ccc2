"""Analysis `shortcut_test`: does a class's dominant frequency map (DFM) alone make the
model predict the class? (Wang et al., ICCV 2023, Sec. 3.3 and 5.)

Every test image is filtered to keep only class c's DFM (the DFMs are computed as the
`dominant_frequencies` analysis does, with its flags), and the model classifies it.
TPR_c is the share of class-c images still predicted c; FPR_c the share of the other
classes' images predicted c. Class c uses a frequency shortcut when its DFM alone
keeps TPR_c >= `--shortcut_test_min_tpr` while FPR_c <= `--shortcut_test_max_fpr`:
a few frequencies suffice to recognize it, and they are specific to it (other images
reduced to them are not pulled to c). A model that outputs probabilities is judged
by their argmax, like one that outputs logits.

The same test runs out of distribution, with the in-distribution DFMs: on the split
shifted by batch ops (`--shortcut_test_shifts`: noise, blur, contrast; see
`data.ops.distribution_shift`), and on other data sets with the same classes
(`--shortcut_test_ood_datasets`, split `--shortcut_test_ood_split`). A shortcut that
holds there is one the model keeps relying on when the rest of the image changes.
"""
import dataclasses
import functools

from absl import flags
import numpy as np
import tensorflow as tf

from tfrandlabels import data as data_lib
from tfrandlabels.analyses import dominant_frequencies
from tfrandlabels.analyses import registry
from tfrandlabels.analysis import spectra
from tfrandlabels.data import ops
from tfrandlabels.errors import ConfigError
from tfrandlabels.pipeline import flags as flag_lib
from tfrandlabels.pipeline import frequency_plots
from tfrandlabels.pipeline import report

flags.DEFINE_float("shortcut_test_min_tpr", 0.5, "Analysis shortcut_test: a class whose DFM "
                   "alone keeps at least this TPR (and at most --shortcut_test_max_fpr) uses a "
                   "frequency shortcut.")
flags.DEFINE_float("shortcut_test_max_fpr", 0.1, "Analysis shortcut_test: the largest FPR of "
                   "a shortcut.")
flags.DEFINE_list("shortcut_test_shifts", ["noise:0.1", "blur:1", "contrast:0.5"],
                  f"Analysis shortcut_test: out-of-distribution shifts of the split, each "
                  f"{ops.SHIFT_FORM}; empty for none.")
flags.DEFINE_list("shortcut_test_ood_datasets", [], "Analysis shortcut_test: other data sets "
                  "with the same classes (load() names) to test the DFMs on.")
flags.DEFINE_string("shortcut_test_ood_split", "test", "Analysis shortcut_test: split of "
                    "--shortcut_test_ood_datasets.")
flags.DEFINE_integer("shortcut_test_seed", 0, "Analysis shortcut_test: seed of the noise shift.")
for _name in ("shortcut_test_min_tpr", "shortcut_test_max_fpr"):
  flag_lib.check(_name, lambda v: 0 <= v <= 1, "must be in [0, 1]")
flag_lib.check_parses("shortcut_test_shifts",
                      lambda values: [ops.parse_shift(v) for v in values],
                      f"must be a comma list of {ops.SHIFT_FORM}", optional=True)
flag_lib.check("shortcut_test_ood_datasets", all, "must be a comma list of data set names "
               "without empty entries")
flag_lib.check_split("shortcut_test_ood_split")

IN_DISTRIBUTION = "in_distribution"


def _ood_data(data, name, settings):
  """`data` with another data set's split as its source, resized to the model's images."""
  split = settings.shortcut_test_ood_split
  try:
    classes = data_lib.num_classes(name, settings.data_dir)
    shape = data_lib.load(name, split, settings.data_dir).element_spec["image"].shape
  except ValueError as e:
    raise ConfigError(f"--shortcut_test_ood_datasets={name}: {e}") from None
  expected = data.source().element_spec["image"].shape
  if classes != data.num_classes or shape[-1] != expected[-1]:
    raise ConfigError(f"--shortcut_test_ood_datasets={name} has {classes} classes and "
                      f"{shape[-1]} channels, the model's data {data.num_classes} and "
                      f"{expected[-1]}; name a data set with the same classes")
  size = data.image_size
  if size is None and tuple(shape[:2]) != tuple(expected[:2]):
    size = tuple(expected[:2])
  return dataclasses.replace(
      data, dataset=name, split=split, per_model={}, image_size=size,
      source=functools.partial(data_lib.load, name, split, settings.data_dir))


def sources(data, settings):
  """{name: AnalysisData}: the split, each shift of it, each other data set."""
  found = {IN_DISTRIBUTION: data}
  for shift in settings.shortcut_test_shifts:
    found[shift] = dataclasses.replace(data, batch_ops=[
        ops.distribution_shift(shift, settings.shortcut_test_seed), *data.batch_ops])
  for name in settings.shortcut_test_ood_datasets:
    found[name] = _ood_data(data, name, settings)
  return found


def _predicted(predict, images, batch):
  """Predicted classes of images [N, H, W, C], `batch` images per forward pass."""
  return np.concatenate([np.argmax(predict(images[i:i + batch]), axis=-1)
                         for i in range(0, len(images), batch)])


def rates(model, data, dfms, batch):
  """TPR and FPR of every class on its DFM-filtered images, and the unfiltered baseline.

  Args:
    model: a Keras model (logits or probabilities).
    data: the `AnalysisData` to filter.
    dfms: bool [C, H, W]; a class whose map is empty gets None.
    batch: images per forward pass.

  Returns:
    {"images", "accuracy" (unfiltered), "tpr", "fpr" (DFM-filtered, [C], None where
    undefined), "unfiltered_tpr", "unfiltered_fpr"}.
  """
  predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
  present = np.flatnonzero(dfms.any(axis=(1, 2)))
  masks = dfms[present].astype(np.float32)
  labels, unfiltered, filtered = [], [], []
  for example in data.batches().as_numpy_iterator():
    images = example["image"]
    labels.append(example["label"])
    unfiltered.append(_predicted(predict, images, batch))
    kept = spectra.remove_frequencies(images, masks).numpy()  # [K, B, H, W, C]
    filtered.append(_predicted(predict, kept.reshape(-1, *images.shape[1:]), batch)
                    .reshape(len(present), len(images)))
  labels, unfiltered = np.concatenate(labels), np.concatenate(unfiltered)
  filtered = np.concatenate(filtered, axis=1)
  classes = data.num_classes
  tpr, fpr = [None] * classes, [None] * classes
  for row, c in enumerate(present):
    class_tpr, class_fpr = spectra.shortcut_rates(filtered[row], labels, classes)
    tpr[c], fpr[c] = _number(class_tpr[c]), _number(class_fpr[c])
  base_tpr, base_fpr = spectra.shortcut_rates(unfiltered, labels, classes)
  return {"images": int(len(labels)), "accuracy": float(np.mean(unfiltered == labels)),
          "tpr": tpr, "fpr": fpr, "unfiltered_tpr": [_number(v) for v in base_tpr],
          "unfiltered_fpr": [_number(v) for v in base_fpr]}


def _number(value):
  """A float for JSON, None for NaN (an undefined rate)."""
  return None if np.isnan(value) else float(value)


def shortcuts(result, settings):
  """Per class: True/False whether it uses a shortcut on these rates, None if unknown."""
  return [None if t is None or f is None else
          bool(spectra.is_shortcut(t, f, settings.shortcut_test_min_tpr,
                                   settings.shortcut_test_max_fpr))
          for t, f in zip(result["tpr"], result["fpr"])]


def run(model, data, settings):
  found = dominant_frequencies.class_dfms(model, data,
                                          **dominant_frequencies.settings_of(settings))
  results = {}
  for name, source in sources(data, settings).items():
    results[name] = rates(model, source, found.dfms, settings.dominant_frequencies_batch)
    results[name]["shortcut"] = shortcuts(results[name], settings)
  figure = frequency_plots.shortcut_rates(results, settings.shortcut_test_min_tpr,
                                          settings.shortcut_test_max_fpr)
  return registry.Output(
      metrics={**data.describe(), "min_tpr": settings.shortcut_test_min_tpr,
               "max_fpr": settings.shortcut_test_max_fpr,
               "radial_band": [dominant_frequencies.radial_band(m) if m.any() else None
                               for m in found.dfms],
               "sources": results},
      plots={"rates": (
          f"Each class's test images on {data.dataset} {data.split} filtered to keep only "
          "that class's DFM: TPR (share still predicted as the class) and FPR (share of "
          "the other classes' images, filtered the same way, predicted as it), in "
          "distribution and under each shift. Dashed: the shortcut thresholds.",
          report.figure_png(figure))})


def _percent(value):
  return "n/a" if value is None else f"{value:.0%}"


def sentence(c, band, rates_, min_tpr, max_fpr):
  """What class c's DFM alone does, in words a reader can act on."""
  tpr, fpr = rates_["tpr"][c], rates_["fpr"][c]
  kept = f"its DFM alone keeps {_percent(tpr)} TPR at {_percent(fpr)} FPR"
  if rates_["shortcut"][c]:
    return f"class {c} relies on a {band}-frequency shortcut: {kept}."
  return (f"class {c}: {kept} (mostly {band} frequencies), short of a shortcut (TPR >= "
          f"{min_tpr:.0%} at FPR <= {max_fpr:.0%}).")


def section(payload, figures):
  blocks, summary, counts = [], [], {}
  for name, entry in payload["models"].items():
    metrics = entry["metrics"]
    label = registry.model_label(name, metrics["dataset"])
    results = metrics["sources"]
    inside = results[IN_DISTRIBUTION]
    classes = [c for c, band in enumerate(metrics["radial_band"]) if band is not None]
    sentences = [sentence(c, metrics["radial_band"][c], inside, metrics["min_tpr"],
                          metrics["max_fpr"]) for c in classes]
    flagged = [s for c, s in zip(classes, sentences) if inside["shortcut"][c]]
    counts[name] = f"{len(flagged)} of {len(classes)}"
    summary += [f"{label}: {s}" for s in flagged] or [
        f"{label}: no class's DFM alone passes the shortcut bar (TPR >= "
        f"{metrics['min_tpr']:.0%} at FPR <= {metrics['max_fpr']:.0%}); median TPR "
        f"{np.median([inside['tpr'][c] for c in classes]):.0%}, median FPR "
        f"{np.median([inside['fpr'][c] for c in classes]):.0%}."]
    others = sorted(n for n in results if n != IN_DISTRIBUTION)
    header = (["class", "DFM mostly", "TPR", "FPR", "shortcut"]
              + [f"TPR / FPR {n}" for n in others])
    rows = [[c, metrics["radial_band"][c], _percent(inside["tpr"][c]),
             _percent(inside["fpr"][c]), "yes" if inside["shortcut"][c] else "no"]
            + [f"{_percent(results[n]['tpr'][c])} / {_percent(results[n]['fpr'][c])}"
               + (" (shortcut)" if results[n]["shortcut"][c] else "") for n in others]
            for c in classes]
    accuracy = ", ".join(f"{n} {results[n]['accuracy']:.0%}" for n in [IN_DISTRIBUTION, *others])
    blocks += [f"Model {name} on {metrics['dataset']} {metrics['split']} (unfiltered "
               f"accuracy: {accuracy}). A class uses a frequency shortcut when its DFM alone "
               f"keeps TPR >= {metrics['min_tpr']:.0%} at FPR <= {metrics['max_fpr']:.0%}. "
               "A high TPR with a high FPR means the frequencies suffice for the class but "
               "are not specific to it: other images reduced to them look like it too."]
    blocks += sentences + [report.Table(header=header, rows=rows,
                                        numeric=tuple(range(2, len(header))))]
    blocks += list(figures[name])
  summary.append("Classes with a frequency shortcut in distribution: " + ", ".join(
      f"{model} {count}" for model, count in counts.items()) + ".")
  return report.Section(title="Frequency shortcut test", summary=summary, blocks=blocks)


ANALYSIS = registry.register(registry.Analysis(
    name="shortcut_test", title="Frequency shortcut test",
    flags=("shortcut_test_min_tpr", "shortcut_test_max_fpr", "shortcut_test_shifts",
           "shortcut_test_ood_datasets", "shortcut_test_ood_split", "shortcut_test_seed",
           *dominant_frequencies.FLAGS, "data_dir"),
    run=run, section=section, needs_labels=True))
