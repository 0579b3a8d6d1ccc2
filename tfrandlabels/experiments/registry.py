"""The experiment registry: `--experiment=NAME` picks one registered `Experiment`.

An experiment is one module that builds an `Experiment` and calls `register`: its
flags (defined in that module), its stages, the models its analyses may run on, the
data they use, and its report sections. Nothing else in the library changes when
one is added.
"""
import dataclasses
from typing import Callable, Dict, Sequence, Tuple

from tfrandlabels.errors import ConfigError
from tfrandlabels.registry import Registry

@dataclasses.dataclass(frozen=True)
class ModelSource:
  """A model an experiment trains: the stage that writes it and how to load it."""
  stage: str
  load: Callable  # fn(ctx) -> keras.Model with the trained weights.


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What `pipelines/run.py --experiment=NAME` runs.

  Attributes:
    name: the `--experiment` value.
    title: the report's heading.
    flags: names of the flags it reads (beyond the pipeline's own).
    int_lists: those of `flags` that are comma lists of integers.
    stages: fn(cfg) -> its own stages in order (the runner adds analyses and report).
    check: fn(cfg) raising ConfigError for settings that need data or a model to judge.
    resolve: fn(cfg) -> cfg with values derived from the flags (e.g. the contents of
      files they name) added, so stages depend on values, not on paths.
    models: fn(cfg) -> {name: ModelSource} the analyses may run on.
    analyses: fn(cfg) -> {analysis: model names}, its default analyses.
    analysis_models: fn(cfg, analysis) -> model names for an analysis asked for with
      --analyses that `analyses` does not list.
    analysis_data: fn(ctx) -> analyses.AnalysisData, the held-out data analyses use.
    data_flags: the flags `analysis_data` depends on.
    sections: fn(ctx, results envelope) -> report sections of its results.
  """
  name: str
  title: str
  flags: Tuple[str, ...]
  stages: Callable
  check: Callable
  sections: Callable
  int_lists: Tuple[str, ...] = ()
  resolve: Callable = lambda cfg: cfg
  models: Callable = lambda cfg: {}
  analyses: Callable = lambda cfg: {}
  analysis_models: Callable = lambda cfg, analysis: ()
  analysis_data: Callable = None
  data_flags: Tuple[str, ...] = ()


EXPERIMENTS = Registry("experiment", "experiment")
register = EXPERIMENTS.register
available = EXPERIMENTS.available
get = EXPERIMENTS.get


def analysis_plan(experiment: Experiment, cfg, requested: Sequence[str]
                  ) -> Dict[str, Tuple[str, ...]]:
  """{analysis: model names} to run: the experiment's defaults, or `requested`."""
  defaults = experiment.analyses(cfg)
  if not requested:
    return dict(defaults)
  if list(requested) == ["none"]:
    return {}
  models = experiment.models(cfg)
  plan = {}
  for name in requested:
    chosen = tuple(defaults.get(name) or experiment.analysis_models(cfg, name))
    if not chosen or not set(chosen) <= set(models):
      raise ConfigError(f"--analyses={name}: experiment {experiment.name} has no models for "
                        f"it; run it on a saved model with pipelines/analyze.py")
    plan[name] = chosen
  return plan
