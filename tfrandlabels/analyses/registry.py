"""The analysis registry: analyses are peers with one signature, runnable on any model.

An analysis takes a trained Keras model, the data it needs (`AnalysisData`) and its
own settings (its flags, defined in its module), and returns metrics and figures
(`Output`). The pipeline runs it on an experiment's checkpoints; `pipelines/analyze.py`
runs it on a model saved anywhere. Both write `results/<name>.json` through
`run_analysis`, so the numbers are the same for the same weights.
"""
import dataclasses
import os
from typing import Callable, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from tfrandlabels import data as data_lib
from tfrandlabels import io
from tfrandlabels.errors import ConfigError
from tfrandlabels.pipeline import report
from tfrandlabels.pipeline import results
from tfrandlabels.registry import Registry

@dataclasses.dataclass(frozen=True)
class AnalysisData:
  """The data an analysis reads: a `load`-contract source and how to feed the model.

  Attributes:
    dataset, split: what `source` holds (recorded with the results).
    source: fn() -> tf.data.Dataset of {"image": uint8, "label", "index"}.
    batch_ops: ops that turn a uint8 batch into model inputs (`data.ops`).
    batch_size: examples per batch.
    num_classes: classes of `label`.
    image_size: (H, W) to resize to, or None.
    per_model: the data of models that were trained on other data sets than this one,
      by model name (an experiment that trains one model per data set); `for_model`
      picks a model's entry.
  """
  dataset: str
  split: str
  source: Callable
  batch_ops: Sequence[Callable]
  batch_size: int
  num_classes: int
  image_size: Optional[Tuple[int, int]] = None
  per_model: Mapping[str, "AnalysisData"] = dataclasses.field(default_factory=dict)

  def for_model(self, name: str) -> "AnalysisData":
    """The data model `name` is analysed on: its `per_model` entry, else this data.

    Raises:
      ConfigError: the models were trained on several data sets and `name` is none of
        them, so which data fits it is unknown.
    """
    if name in self.per_model:
      return self.per_model[name]
    if len({d.dataset for d in self.per_model.values()}) > 1:
      raise ConfigError(f"model {name!r}: its run trained one model per data set "
                        f"({', '.join(self.per_model)}) and which one this is is unknown; "
                        "save it with model.save('x.keras') and analyse that with its "
                        "--dataset")
    return self

  def batches(self) -> tf.data.Dataset:
    """One ordered pass over the split, as model-ready batches."""
    return data_lib.make_input_fn(
        self.source, global_batch_size=self.batch_size, training=False,
        image_size=self.image_size, batch_ops=self.batch_ops, cache=False)()

  def examples(self, count: int):
    """The first `count` examples: (uint8 images as shown, model inputs, labels)."""
    raw = data_lib.make_input_fn(self.source, global_batch_size=count, training=False,
                                 image_size=self.image_size, cache=False)()
    batch = next(iter(raw.take(1)))
    inputs = batch
    for op in self.batch_ops:
      inputs = op(inputs)
    shown = tf.cast(tf.clip_by_value(tf.round(tf.cast(batch["image"], tf.float32)), 0, 255),
                    tf.uint8)
    return shown.numpy(), inputs["image"].numpy(), batch["label"].numpy()

  def describe(self) -> dict:
    if self.per_model:
      return {"dataset": ",".join(dict.fromkeys(d.dataset for d in self.per_model.values())),
              "split": self.split}
    return {"dataset": self.dataset, "split": self.split}


@dataclasses.dataclass(frozen=True)
class Output:
  """What an analysis returns for one model: JSON-able metrics and named figures."""
  metrics: dict
  plots: Mapping[str, Tuple[str, bytes]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Analysis:
  """A registered analysis.

  Attributes:
    name: the `--analyses` value and the results file name.
    title: its report section's heading.
    flags: names of its settings (flags defined in its module).
    run: fn(model, data: AnalysisData, settings namespace) -> Output.
    section: fn(payload: results.AnalysisPayload, plots: {model: [report.Plot]})
      -> report.Section.
    needs_labels: whether its results read the model's outputs as the data's classes
      (losses, rates or maps against the true labels). Such an analysis means nothing on
      a model whose head was trained on other classes (the transfer experiment's
      random-label network), so experiments leave those models out.
  """
  name: str
  title: str
  flags: Tuple[str, ...]
  run: Callable
  section: Callable
  needs_labels: bool


ANALYSES = Registry("analysis", "analyses")
register = ANALYSES.register
available = ANALYSES.available
get = ANALYSES.get


def model_label(name: str, dataset: str) -> str:
  """How a report names model `name` analysed on `dataset`: the name, with the data set
  where the name does not already say it."""
  return name if name == dataset else f"{name} ({dataset})"


def plot_path(analysis: str, model: str, plot: str) -> str:
  """Where a plot's PNG lives, relative to the workdir."""
  return os.path.join("analyses", analysis, model, f"{plot}.png")


def run_analysis(analysis: Analysis, models: Mapping[str, Callable], data: AnalysisData,
                 settings, workdir: str, *, config: dict, write: bool = True) -> dict:
  """Runs `analysis` on each model (name -> loader) and writes results/<name>.json.

  Returns:
    The payload (`results.AnalysisPayload`).
  """
  payload = {"data": data.describe(), "models": {}}
  for model_name, load in models.items():
    output = analysis.run(load(), data.for_model(model_name), settings)
    plots = []
    for plot_name, (caption, png) in output.plots.items():
      relative = plot_path(analysis.name, model_name, plot_name)
      if write:
        io.atomic_write(os.path.join(workdir, relative), png)
      plots.append({"name": plot_name, "caption": caption, "path": relative})
    payload["models"][model_name] = {"metrics": output.metrics, "plots": plots}
  if write:
    results.write(workdir, kind="analysis", name=analysis.name, config=config,
                  payload=payload)
  return payload


def section(analysis: Analysis, payload: dict, workdir: str) -> report.Section:
  """The analysis's report section, its figures read back from the workdir."""
  plots = {}
  for model_name, entry in payload["models"].items():
    plots[model_name] = []
    for plot in entry["plots"]:
      with tf.io.gfile.GFile(os.path.join(workdir, plot["path"]), "rb") as f:
        png = f.read()
      name = f"{analysis.name}/{model_name}_{plot['name']}"
      plots[model_name].append(report.Plot(name=name, caption=plot["caption"], png=png))
  return analysis.section(payload, plots)
