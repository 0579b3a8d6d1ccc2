"""The format of every `results/<name>.json` a run writes: one module, used by the
writers (experiments, analyses), the report and the tests.

Every file is an envelope:

  {"schema_version": 1, "kind": "experiment" | "analysis", "name": ...,
   "config": {flag: value}, "payload": {...}}

The payload of each experiment and analysis is declared here as a TypedDict;
`validate` checks a value against a TypedDict recursively (required keys, nested
TypedDicts, lists and dicts of them), so a reader never takes a file of another
layout or version for a valid one.
"""
import os
import typing
from typing import Dict, List, Optional, TypedDict, Union

from typing_extensions import NotRequired  # typing has it from Python 3.11 on

from tfrandlabels import io
from tfrandlabels.errors import ConfigError

SCHEMA_VERSION = 1
RESULTS_DIR = "results"


class Envelope(TypedDict):
  schema_version: int
  kind: str
  name: str
  config: dict
  payload: dict


# --- transfer experiment ---------------------------------------------------------------


class Curve(TypedDict):
  """Learning curves over seeds (`analysis.curves.learning_curves`)."""
  step: List[int]
  accuracy_mean: List[float]
  accuracy_ci95: List[float]
  accuracy_per_seed: List[List[float]]
  loss_mean: List[float]
  loss_ci95: List[float]
  loss_per_seed: List[List[float]]


class StepsToTarget(TypedDict):
  per_seed: List[Optional[int]]
  mean: Optional[float]


class Speedup(TypedDict):
  """mean(scratch steps) / mean(run steps) with a bootstrap 95% interval over seeds."""
  ratio: Optional[float]
  ci95_low: Optional[float]
  ci95_high: Optional[float]


class FinalAccuracy(TypedDict):
  per_seed: List[float]
  mean: float
  ci95: float


class VariantResult(TypedDict):
  variant: str
  transfer_layers: int
  seeds: List[int]
  curve: Curve
  steps_to_target: StepsToTarget
  speedup_over_scratch: Optional[Speedup]
  final_test_accuracy: FinalAccuracy
  worst_loss_over_ln_c: List[float]  # Per seed: `analysis.curves.worst_loss_ratio`.


class LayerTrack(TypedDict):
  """One conv layer's alignment with its input during pretraining (Maennel et al.,
  Sec. 2.5): as `AlignmentTrack`, but Sigma_x of a deeper layer is that of its input
  activations, recomputed at each of its own steps, so `sigma` has one list per step.
  `dim`: d = kh * kw * cin, the size of Sigma_x.
  """
  step: List[int]
  dim: int
  sigma: List[List[float]]
  misalignment: List[float]
  misalignment_random_basis: List[float]
  subspace_overlap: List[float]
  subspace_overlap_random: List[float]
  transfer_function: List[List[float]]


class AlignmentTrack(TypedDict):
  """First-layer alignment recorded during training (`training.hooks.AlignmentHook`).

  `sigma`: square roots of Sigma_x's eigenvalues (descending), the x axis of
  `transfer_function` (one list per recorded step). `subspace_overlap`: overlap of the
  top-k principal subspaces of Sigma_x and Sigma_w; `subspace_overlap_random`: its
  baseline k/d for a random subspace (d = len(sigma)). `layers` (pretraining of a model
  whose first weight layer is a conv): conv layer name -> its `LayerTrack`, the first
  layer's repeating the values above; `layer_order` their names in forward order (JSON
  files keep keys sorted, conv10 before conv2): read them with `forward_layers`.
  """
  sigma: List[float]
  step: List[int]
  misalignment: List[float]
  misalignment_random_basis: List[float]
  subspace_overlap: List[float]
  subspace_overlap_random: List[float]
  transfer_function: List[List[float]]
  layers: NotRequired[Dict[str, LayerTrack]]
  layer_order: NotRequired[List[str]]


def forward_layers(track) -> Dict[str, dict]:
  """An alignment track's `layers`, first layer first ({} if it has none)."""
  layers = track.get("layers") or {}
  return {name: layers[name] for name in track.get("layer_order", list(layers))}


class PretrainResult(TypedDict):
  steps: int
  final_train_accuracy: float
  realized_label_noise: float


class TransferPayload(TypedDict):
  target_accuracy: float
  pretrain: PretrainResult
  variants: Dict[str, VariantResult]
  tracks: Dict[str, AlignmentTrack]  # "upstream" (pretraining), "downstream" (scratch)


# --- gaussian experiment ---------------------------------------------------------------


class GaussianSetting(TypedDict):
  """One setting over its seeds; lists over the variances ascend (see gaussian.summarize)."""
  dim: int
  variance_min: float
  variance_max: float
  widths: List[int]
  samples: int
  seeds: List[int]
  tracks: List[AlignmentTrack]
  final_train_accuracy: List[float]
  variance: List[float]
  first_step: int
  last_step: int
  first_mean: List[float]
  last_mean: List[float]
  last_sd: List[float]
  shape: str
  seed_shapes: List[str]


class GaussianPayload(TypedDict):
  settings: Dict[str, GaussianSetting]


# --- geometry_toy experiment -----------------------------------------------------------


class Magnification(TypedDict):
  """`geometry.magnification`, None where undefined or infinite."""
  rank_correlation: Optional[float]
  volume_ratio: Optional[float]
  log10_volume_ratio: Optional[float]


class LogVolumeRange(TypedDict):
  min: float
  median: float
  max: float


class VolumeSummary(TypedDict):
  """`analyses.volume_element.summary` over a set of points: `geometry.magnification`
  (None where undefined or infinite) and the spread of the log10 volume element."""
  rank_correlation: Optional[float]
  volume_ratio: Optional[float]
  log10_volume_ratio: Optional[float]
  log10_volume: LogVolumeRange
  entropy_mean: float
  zero_singular_value_points: int


class ToyLayer(TypedDict):
  """The volume element of one hidden layer's feature map over the grid."""
  layer: str
  width: int
  volume: VolumeSummary


class ToyState(TypedDict):
  """A toy net at initialization or after training.

  `maps`: workdir-relative .npy of [2 + layers, R, R]: predicted class, prediction
  entropy, then each layer's log10 volume element (row r = r-th x2 value).
  """
  train_accuracy: float
  layers: List[ToyLayer]  # First to last; the last is the network's feature map.
  maps: str


class ToyRun(TypedDict):
  """A toy net's states, and a control: the magnification measure of the initial volume
  element under the trained net's prediction entropy, which is what training would show
  if it moved the decision boundary without reshaping the geometry."""
  task: str
  widths: List[int]
  steps: int
  batch_size: int
  learning_rate: float
  weight_decay: float
  states: Dict[str, ToyState]  # "initialization", "trained"
  initial_volume_trained_entropy: Magnification


class GeometryToyPayload(TypedDict):
  grid_extent: float
  resolution: int
  runs: Dict[str, ToyRun]


# --- frequency_shortcuts experiment ----------------------------------------------------


class LearningOrder(TypedDict):
  """Test accuracy during training on frequency-filtered copies of the first test images
  (`training.hooks.FilteredAccuracyHook`), by copy: `unfiltered`, `low_pass_R`,
  `high_pass_R`, one value per logged `step`. `steps_to_target`: the first logged step
  at which a copy reached `target`, halfway from `chance` to the final unfiltered
  accuracy (None: never)."""
  step: List[int]
  chance: float
  accuracy: Dict[str, List[float]]
  target: float
  steps_to_target: Dict[str, Optional[int]]


class ShortcutRun(TypedDict):
  """One trained model; `planted_band`: [r_min, r_max) of a planted-band data set."""
  dataset: str
  steps: int
  final_train_accuracy: float
  test_accuracy: float
  planted_band: Optional[List[float]]
  learning_order: LearningOrder


class FrequencyShortcutsPayload(TypedDict):
  runs: Dict[str, ShortcutRun]  # By model name (its data set's name).


# --- analyses ------------------------------------------------------------------------


class PlotRecord(TypedDict):
  """A figure an analysis drew, saved as PNG at `path` (relative to the workdir)."""
  name: str
  caption: str
  path: str


class ModelAnalysis(TypedDict):
  metrics: dict
  plots: List[PlotRecord]


class AnalysisPayload(TypedDict):
  """One analysis over the models it ran on, by model name (e.g. `scratch`)."""
  data: dict
  models: Dict[str, ModelAnalysis]


PAYLOADS = {"transfer": TransferPayload, "gaussian": GaussianPayload,
            "geometry_toy": GeometryToyPayload,
            "frequency_shortcuts": FrequencyShortcutsPayload}


def _type_name(kind) -> str:
  return getattr(kind, "__name__", str(kind))


def validate(value, kind, where: str = "value") -> None:
  """Raises ConfigError if `value` does not have the layout of `kind` (a TypedDict or
  typing construct built from them); checks keys (a `NotRequired` one may be absent) and
  nesting, not number types."""
  origin, args = typing.get_origin(kind), typing.get_args(kind)
  if typing.is_typeddict(kind):
    if not isinstance(value, dict):
      raise ConfigError(f"{where} must be a {_type_name(kind)} object, got "
                        f"{type(value).__name__}")
    for key, hint in typing.get_type_hints(kind).items():
      if key in value:
        validate(value[key], hint, f"{where}.{key}")
      elif key in kind.__required_keys__:
        raise ConfigError(f"{where} is missing {key!r}")
  elif origin is Union:
    if value is None and type(None) in args:
      return
    validate(value, next(a for a in args if a is not type(None)), where)
  elif origin in (list, List):
    if not isinstance(value, list):
      raise ConfigError(f"{where} must be a list, got {type(value).__name__}")
    for i, item in enumerate(value):
      validate(item, args[0], f"{where}[{i}]")
  elif origin in (dict, Dict):
    if not isinstance(value, dict):
      raise ConfigError(f"{where} must be an object, got {type(value).__name__}")
    for key, item in value.items():
      validate(item, args[1], f"{where}[{key!r}]")


def path(workdir: str, name: str) -> str:
  return os.path.join(workdir, RESULTS_DIR, f"{name}.json")


def write(workdir: str, *, kind: str, name: str, config: dict, payload: dict) -> str:
  """Validates and writes results/<name>.json atomically; returns its path."""
  envelope = {"schema_version": SCHEMA_VERSION, "kind": kind, "name": name,
              "config": config, "payload": payload}
  validate(envelope, Envelope, name)
  validate(payload, payload_type(kind, name), f"{name}.payload")
  target = path(workdir, name)
  io.write_json(target, envelope)
  return target


def payload_type(kind: str, name: str):
  return AnalysisPayload if kind == "analysis" else PAYLOADS[name]


def read(workdir: str, name: str) -> Optional[Envelope]:
  """Reads and validates results/<name>.json; None if it does not exist.

  Raises:
    ConfigError: the file is of another schema version or layout (e.g. written by an
      older release): it names the file to delete.
  """
  target = path(workdir, name)
  hint = f"; delete {target} and rerun to rebuild it"
  try:
    envelope = io.read_json(target)
  except ValueError:
    raise ConfigError(f"{target} is not valid JSON (cut mid-write?){hint}") from None
  if envelope is None:
    return None
  if not isinstance(envelope, dict) or envelope.get("schema_version") != SCHEMA_VERSION:
    version = envelope.get("schema_version") if isinstance(envelope, dict) else None
    raise ConfigError(f"{target} has schema_version {version!r}, this release reads "
                      f"{SCHEMA_VERSION}{hint}")
  try:
    validate(envelope, Envelope, target)
    validate(envelope["payload"], payload_type(envelope["kind"], name), f"{target}.payload")
  except ConfigError as e:
    raise ConfigError(f"{e}{hint}") from None
  return envelope
