"""Analysis `volume_element`: the metric a model's feature map pulls back onto input
space, and whether it magnifies areas near decision boundaries (Zavatone-Veth et al.,
2023; `tfrandlabels.analysis.geometry` holds the math).

The feature map phi is the input of the model's last Dense layer: the last hidden
representation, after its activation (and after global pooling in the ResNets), never
the logits. `feature_model` builds it as a keras.Model from the model's input to that
tensor, and it is evaluated with training=False on `float_copy(model)`, which computes
in float32 even if the model was trained in mixed precision (float64 models stay
float64). The model's outputs are taken as logits, as the trainer takes them.

Image models: on each of --volume_planes planes through three images of the split
(examples 3i, 3i+1, 3i+2, in the model's normalized input space; see
`geometry.plane_through`), a --volume_resolution^2 grid over [-1, 1]^2. Per point: the
predicted class, the prediction entropy (base 10), and the log10 volume element, the
sum of log10 of the top --volume_top_k singular values of J / sqrt(n)
(`geometry.log10_volume`; 0 takes the whole spectrum, min(n, d) values). Jacobians are
computed for a batch of --volume_batch / --volume_chunk points at once: one forward
pass, then one backward pass per feature (row of J; for 2-D inputs a forward-mode pass
per input direction), --volume_chunk of them at a time, so that about --volume_batch
inputs' activations are held. A point where some of those singular values are zero
keeps the log volume of the subspace where J has rank, and is counted in
`zero_singular_value_points`.

Models on 2-D inputs (the toy tasks): the same per point over a grid covering
[-E, E]^2 (E = --volume_grid_extent); there k = 2 and the log volume is
log10 sqrt(det g) exactly.

Metrics, per plane (or grid) and pooled over planes: `geometry.magnification` (the rank
correlation between log volume and entropy, and the ratio of the mean volume element
over the 10% most uncertain points to that over the 50% most certain), and the range
of the log volume.
"""
import functools
import math

from absl import flags
import keras
import numpy as np
from scipy import special
import tensorflow as tf

from tfrandlabels.analyses import registry
from tfrandlabels.analysis import geometry
from tfrandlabels.errors import ConfigError
from tfrandlabels.pipeline import flags as flag_lib
from tfrandlabels.pipeline import plots
from tfrandlabels.pipeline import report

flags.DEFINE_integer("volume_planes", 2, "Analysis volume_element: planes through three "
                     "images each (image models).")
flags.DEFINE_integer("volume_resolution", 80, "Analysis volume_element: grid points per axis "
                     "of each plane (or of the grid, for 2-D inputs).")
flags.DEFINE_integer("volume_top_k", 0, "Analysis volume_element: largest singular values "
                     "of J/sqrt(n) summed into the log volume; 0 for all min(n, d).")
flags.DEFINE_integer("volume_batch", 256, "Analysis volume_element: model inputs whose "
                     "activations a pass holds (points x Jacobian rows at a time); lower it "
                     "if memory runs out.")
flags.DEFINE_integer("volume_chunk", 4, "Analysis volume_element: Jacobian rows (features; "
                     "input directions if there are fewer) computed at a time.")
flags.DEFINE_float("volume_grid_extent", 1.5, "Analysis volume_element: for models on 2-D "
                   "inputs, the grid covers [-E, E]^2.")
flag_lib.check_at_least(("volume_planes", "volume_batch", "volume_chunk"), 1)
# A 4 x 4 grid is the smallest with the 10 points `geometry.magnification` needs.
flag_lib.check_at_least(("volume_resolution",), 4)
flag_lib.check_at_least(("volume_top_k",), 0)
flag_lib.check("volume_grid_extent", lambda v: v > 0, "must be > 0")

FLAGS = ("volume_planes", "volume_resolution", "volume_top_k", "volume_batch", "volume_chunk",
         "volume_grid_extent")
# The planes' grids cover [-PLANE_EXTENT, PLANE_EXTENT]^2 in plane coordinates, where
# the three images lie at IMAGE_POSITIONS (`geometry.plane_through`).
PLANE_EXTENT = 1.0
IMAGE_POSITIONS = ((-0.5, 0.5 / math.sqrt(3)), (0.5, 0.5 / math.sqrt(3)), (0.0, -1 / math.sqrt(3)))


def float_copy(model):
  """A copy of `model`, same weights, whose layers compute in their variables' dtype.

  A mixed-precision layer keeps float32 weights but computes in float16 or bfloat16,
  whose 11- or 8-bit mantissas are too coarse for Jacobians and their singular values;
  in the copy it computes in float32. float32 and float64 layers are unchanged.
  """
  def clone(layer):
    config = layer.get_config()
    config["dtype"] = layer.dtype_policy.variable_dtype
    return layer.__class__.from_config(config)

  copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
  copy.set_weights(model.get_weights())
  return copy


def feature_model(model, layer=None):
  """The feature map as a keras.Model from `model`'s input.

  Args:
    model: a functional or Sequential Keras model with one input.
    layer: the name of a layer whose output is the feature map; None takes the input of
      the model's last Dense layer (the last hidden representation).

  Returns:
    A keras.Model mapping the model's inputs to features [B, n], named after them
    (`layer`, or input_of_NAME for the last Dense layer NAME).
  """
  if len(model.inputs) != 1:
    raise ConfigError(f"--analyses=volume_element: the model takes {len(model.inputs)} "
                      "inputs; the volume element needs a model of one input")
  if layer is not None:
    features, name = model.get_layer(layer).output, layer
  else:
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    if not dense:
      raise ConfigError("--analyses=volume_element: the model has no Dense layer; its "
                        "feature map is the input of the last one (the classifier)")
    features, name = dense[-1].input, f"input_of_{dense[-1].name}"
  if len(features.shape) != 2:
    raise ConfigError(f"--analyses=volume_element: the feature map has shape "
                      f"{tuple(features.shape)}; it must be a batch of vectors [B, n] "
                      "(flatten or pool before the classifier)")
  return keras.Model(model.inputs[0], features, name=name)


def grid_2d(extent, resolution):
  """[R*R, 2] points of a grid over [-extent, extent]^2, ordered as `plane_through`'s:
  a reshape to [R, R] puts x2 (increasing) on the rows and x1 on the columns."""
  axis = np.linspace(-extent, extent, resolution)
  rows, columns = np.meshgrid(axis, axis, indexing="ij")
  return np.stack([columns.ravel(), rows.ravel()], axis=1)


def predictions(model, points, batch_size):
  """(predicted class, prediction entropy in base 10) of `model`'s logits at each point."""
  logits = np.concatenate([
      np.asarray(model(points[start:start + batch_size], training=False), np.float64)
      for start in range(0, len(points), batch_size)])
  return (np.argmax(logits, axis=-1),
          geometry.prediction_entropy(special.softmax(logits, axis=-1)))


def log_volumes(features, points, *, top_k=None, inputs_per_pass, chunk_size):
  """log10 volume element and count of zero singular values at each point.

  Args:
    features: the feature map, a keras.Model (see `feature_model`).
    points: [N, ...input shape] inputs.
    top_k: singular values of J / sqrt(n) summed; None for all min(n, d).
    inputs_per_pass: a bound on the inputs the model sees per pass (its memory).
    chunk_size: Jacobian rows or columns per pass (`geometry.feature_jacobian`).

  Returns:
    (log10_volume, num_zero): float64 [N] and int64 [N], as `geometry.log10_volume`.
  """
  # `feature_jacobian` takes min(n, d) rows or columns, chunk_size of them at a time, each
  # holding about a batch's activations (a backward pass, or a forward pass on a copy of
  # the batch): the batch is the inputs of a pass over that many.
  copies = min(chunk_size, features.output_shape[-1], math.prod(points.shape[1:]))
  largest = min(max(1, inputs_per_pass // copies), len(points))
  # As few passes as that allows, of equal size, so that the last pads the fewest points.
  passes = -(-len(points) // largest)
  batch_size = -(-len(points) // passes)
  # Traced once for all batches, the last one padded to the same size: a graph of all
  # passes runs the model and its backward passes without Python between.
  jacobian_fn = tf.function(functools.partial(
      geometry.feature_jacobian, lambda x: features(x, training=False), chunk_size=chunk_size))
  padded = np.concatenate([points, np.repeat(points[-1:], -len(points) % batch_size, axis=0)])
  logs, zeros = [], []
  for start in range(0, len(padded), batch_size):
    log, zero = geometry.log10_volume(jacobian_fn(padded[start:start + batch_size]).numpy(),
                                      top_k)
    logs.append(log)
    zeros.append(zero)
  return np.concatenate(logs)[:len(points)], np.concatenate(zeros)[:len(points)]


def magnification(log10_volume, entropy):
  """`geometry.magnification` as JSON values: None where it is undefined or infinite."""
  return {key: value if math.isfinite(value) else None
          for key, value in geometry.magnification(log10_volume, entropy).items()}


def summary(log10_volume, num_zero, entropy):
  """The magnification measure and the spread of the log volume over a set of points."""
  return {**magnification(log10_volume, entropy),
          "log10_volume": {"min": float(np.min(log10_volume)),
                           "median": float(np.median(log10_volume)),
                           "max": float(np.max(log10_volume))},
          "entropy_mean": float(np.mean(entropy)),
          "zero_singular_value_points": int(np.count_nonzero(num_zero))}


def point_values(model, features, points, settings, top_k=None):
  """Predicted class, entropy, log10 volume and zero count at each point (flat arrays)."""
  predicted, entropy = predictions(model, points, settings.volume_batch)
  log10_volume, num_zero = log_volumes(features, points, top_k=top_k,
                                       inputs_per_pass=settings.volume_batch,
                                       chunk_size=settings.volume_chunk)
  return {"predicted": predicted, "entropy": entropy, "log10_volume": log10_volume,
          "num_zero": num_zero}


def _top_k(settings, width, dim):
  """--volume_top_k as `geometry.log10_volume`'s k (None: the whole spectrum)."""
  if settings.volume_top_k > min(width, dim):
    raise ConfigError(f"--volume_top_k={settings.volume_top_k} exceeds min(n, d) = "
                      f"{min(width, dim)} for this model (n={width} features, d={dim} "
                      "inputs); use 0 for the whole spectrum")
  return settings.volume_top_k or None


def _maps(values, resolution):
  """The per-point values as [R, R] maps."""
  return {key: values[key].reshape(resolution, resolution)
          for key in ("predicted", "entropy", "log10_volume")}


def _planes(model, features, data, settings, top_k):
  """Regions and figure rows of the planes through the split's first images."""
  count = 3 * settings.volume_planes
  _, inputs, labels = data.examples(count)
  if len(inputs) < count:
    raise ConfigError(f"--volume_planes={settings.volume_planes} needs {count} examples; "
                      f"{data.dataset} {data.split} has {len(inputs)}")
  regions, rows, pooled = [], [], []
  for plane in range(settings.volume_planes):
    first = 3 * plane
    try:
      points = geometry.plane_through(*inputs[first:first + 3],
                                      resolution=settings.volume_resolution,
                                      extent=PLANE_EXTENT)[0]
    except ValueError as e:
      raise ConfigError(f"--volume_planes: examples {first} to {first + 2} of {data.split}: "
                        f"{e}") from None
    values = point_values(model, features, points, settings, top_k)
    pooled.append(values)
    classes = [int(label) for label in labels[first:first + 3]]
    regions.append({"region": f"plane {plane + 1}", "examples": list(range(first, first + 3)),
                    "labels": classes,
                    **summary(values["log10_volume"], values["num_zero"], values["entropy"])})
    rows.append({"title": f"plane {plane + 1} (classes {', '.join(map(str, classes))})",
                 "markers": [(x, y, str(i + 1)) for i, (x, y) in enumerate(IMAGE_POSITIONS)],
                 **_maps(values, settings.volume_resolution)})
  if settings.volume_planes > 1:
    regions.append({"region": "all planes", **summary(
        *(np.concatenate([v[key] for v in pooled])
          for key in ("log10_volume", "num_zero", "entropy")))})
  return regions, plots.volume_panels(rows, extent=PLANE_EXTENT,
                                      num_classes=data.num_classes)


def _grid(model, features, settings):
  """Region and figure of a grid over 2-D input space."""
  extent = settings.volume_grid_extent
  values = point_values(model, features, grid_2d(extent, settings.volume_resolution),
                        settings)
  region = {"region": f"grid [-{extent:g}, {extent:g}]^2",
            **summary(values["log10_volume"], values["num_zero"], values["entropy"])}
  row = {"title": "input space (x1 across, x2 up)", **_maps(values, settings.volume_resolution)}
  num_classes = model.output_shape[-1]
  return [region], plots.volume_panels([row], extent=extent, num_classes=num_classes)


def run(model, data, settings):
  model = float_copy(model)
  features = feature_model(model)
  width, dim = features.output_shape[-1], math.prod(model.input_shape[1:])
  if tuple(model.input_shape[1:]) == (2,):
    regions, figure = _grid(model, features, settings)
    caption = (f"Over a grid of input space: the predicted class, the prediction entropy "
               f"(base 10) and log10 sqrt(det g), the volume element of the feature map "
               f"(the {width} inputs of the last Dense layer), with the decision boundaries "
               "in white. Magnification shows as a bright band along the boundaries.")
  else:
    regions, figure = _planes(model, features, data, settings, _top_k(settings, width, dim))
    spectrum = f"the top {settings.volume_top_k}" if settings.volume_top_k else "all"
    caption = (f"Planes through three {data.split} images each (numbered; plane coordinates, "
               "images at the corners of a unit triangle): the predicted class, the "
               "prediction entropy (base 10) and the log10 volume element of the feature "
               f"map (the {width} inputs of the last Dense layer) from {spectrum} singular "
               "values of J/sqrt(n), with the decision boundaries in white.")
  metrics = {"feature_map": features.name, "feature_width": width, "input_dim": dim,
             "top_k": settings.volume_top_k or min(width, dim),
             "resolution": settings.volume_resolution, "regions": regions}
  return registry.Output(metrics=metrics,
                         plots={"maps": (caption, report.figure_png(figure))})


def formatted(value, pattern):
  """`value` formatted with `pattern`, or n/a for a measure that is undefined (None)."""
  return "n/a" if value is None else format(value, pattern)


def section(payload, figures):
  rows, measures = [], []
  for name, entry in payload["models"].items():
    metrics = entry["metrics"]
    for region in metrics["regions"]:
      rows.append([name, region["region"], " ".join(map(str, region.get("labels", []))),
                   formatted(region["rank_correlation"], ".3f"),
                   formatted(region["volume_ratio"], ".3g"),
                   f"{region['log10_volume']['median']:.2f}",
                   region["zero_singular_value_points"]])
    overall = metrics["regions"][-1]
    measures.append(f"{name} {formatted(overall['rank_correlation'], '.2f')} and "
                    f"{formatted(overall['volume_ratio'], '.3g')} ({overall['region']})")
  blocks = [
      "The volume element sqrt(det g) of the metric g = J^T J / n that the last hidden "
      "layer pulls back onto input space says how much the network stretches a small "
      "region of input space. Training is predicted to magnify it near decision boundaries "
      "(Zavatone-Veth et al., 2023): the log volume then correlates with the prediction "
      "entropy, and the volume ratio exceeds 1.",
      report.Table(header=["model", "region", "image classes", "rank correlation",
                           "volume ratio", "median log10 volume", "points with zero singular "
                           "values"], rows=rows, numeric=(3, 4, 5, 6))]
  for name, model_plots in figures.items():
    blocks += [f"Model {name}:"] + list(model_plots)
  summary_sentence = ("Rank correlation between the log volume element and the prediction "
                      "entropy, and volume element of the 10% most uncertain points over "
                      "that of the 50% most certain (1: no magnification near decision "
                      "boundaries): " + "; ".join(measures) + ".")
  return report.Section(title="Input-space volume element", summary=[summary_sentence],
                        blocks=blocks)


ANALYSIS = registry.register(registry.Analysis(
    name="volume_element", title="Input-space volume element", flags=FLAGS, run=run,
    section=section, needs_labels=False))
