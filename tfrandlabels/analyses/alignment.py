"""Analysis `alignment`: how a model's first-layer filters align with the data
(Maennel et al., NeurIPS 2020, Sec. 2 and Fig. 3).

For the first weight layer it computes Sigma_x, the covariance of the input patches
the layer sees (its kernel size and stride; a dense layer sees the whole input), and
Sigma_w, the covariance of its filters, then reports the misalignment M(Sigma_x,
Sigma_w), the same score in random orthonormal bases (what an unaligned layer
scores), the overlap of the two covariances' top-k principal subspaces against k/d
for a random subspace, the transfer function f(sigma), and the top eigenfilters of
both.
"""
from absl import flags
import numpy as np

from tfrandlabels import models
from tfrandlabels.analyses import registry
from tfrandlabels.analysis import alignment
from tfrandlabels.analysis import layer_inputs
from tfrandlabels.errors import ConfigError
from tfrandlabels.pipeline import flags as flag_lib
from tfrandlabels.pipeline import plots
from tfrandlabels.pipeline import report

flags.DEFINE_integer("alignment_bases", 10, "Analysis alignment: random orthonormal bases "
                     "averaged for the baseline.")
flags.DEFINE_integer("alignment_eigenfilters", 8, "Analysis alignment: eigenfilters shown.")
flags.DEFINE_integer("alignment_max_dim", 1024, "Analysis alignment: largest number of "
                     "inputs per filter for which Sigma_x is computed.")
flags.DEFINE_integer("alignment_subspace_k", alignment.SUBSPACE_K, "Analysis alignment and "
                     "the transfer experiment's tracking during training: k of the overlap "
                     "of the top-k principal subspaces of Sigma_x and Sigma_w, at most the "
                     "first layer's inputs per filter.")
flag_lib.check_at_least(("alignment_bases", "alignment_eigenfilters", "alignment_max_dim",
                         "alignment_subspace_k"), 1)


def check_subspace_k(k, dim):
  """Raises ConfigError unless --alignment_subspace_k=k fits a layer with `dim` inputs
  per filter (its Sigma_x and Sigma_w are dim x dim)."""
  if k > dim:
    raise ConfigError(f"--alignment_subspace_k={k} must be in [1, {dim}]: the first layer "
                      f"sees {dim} inputs per filter")


def subspace_overlap_text(overlap, random, k, dim):
  """The subspace overlap against its random baseline, in words for a report."""
  return (f"top-{k} subspace overlap {overlap:.2f} against {random:.2f} = {k}/{dim} for a "
          "random subspace (1: the same subspace)")


def run(model, data, settings):
  layer = models.weight_layers(model)[0]
  kernel = np.asarray(layer.kernel.numpy(), np.float32)
  dim = int(np.prod(kernel.shape[:-1]))
  if dim > settings.alignment_max_dim or len(model.input_shape) != 4:
    return registry.Output(metrics={"layer": layer.name, "dim": dim, "skipped": (
        f"Sigma_x would be {dim} x {dim}; raise --alignment_max_dim (now "
        f"{settings.alignment_max_dim}) to compute it")})
  subspace_k = settings.alignment_subspace_k
  check_subspace_k(subspace_k, dim)
  patch, stride = layer_inputs.input_patches(layer, model.input_shape[1:])
  _, sigma_x = alignment.patch_covariance(data.batches().map(lambda b: b["image"]), patch,
                                          stride)
  sigma_w = alignment.filter_covariance(kernel)
  sigma, f = alignment.transfer_function(sigma_x, sigma_w)
  count = min(settings.alignment_eigenfilters, dim)
  shape = kernel.shape[:-1]
  result = {
      "layer": layer.name, "dim": dim,
      "misalignment": alignment.misalignment(sigma_x, sigma_w),
      "misalignment_random_basis": alignment.random_basis_misalignment(
          sigma_w, seed=0, num_bases=settings.alignment_bases),
      "subspace_k": subspace_k,
      "subspace_overlap": alignment.subspace_overlap(sigma_x, sigma_w, subspace_k),
      "subspace_overlap_random": alignment.random_subspace_overlap(dim, subspace_k),
      "sigma": np.asarray(sigma, np.float64).tolist(),
      "transfer_function": np.asarray(f, np.float64).tolist(),
      "eigenfilters": {"data": alignment.top_eigenfilters(sigma_x, count, shape).tolist(),
                       "model": alignment.top_eigenfilters(sigma_w, count, shape).tolist()},
  }
  return registry.Output(metrics=result, plots={
      "eigenfilters": ("Top eigenvectors of Sigma_x (top row) and of the first layer's "
                       "Sigma_w (bottom row), as image patches, largest eigenvalue first. "
                       "Aligned filters look like the data's eigenvectors.",
                       report.figure_png(plots.eigenfilters(
                           {"eigenfilters": {"data": result["eigenfilters"]["data"],
                                             "pretrained": result["eigenfilters"]["model"]}},
                           model_label="model's filters"))),
      "transfer_function": ("The first layer's transfer function f(sigma) = sqrt(v' Sigma_w "
                            "v) along each eigenvector v of Sigma_x, against the data's "
                            "standard deviation sigma along it.",
                            report.figure_png(plots.final_transfer_function(
                                result["sigma"], result["transfer_function"]))),
  })


def section(payload, figures):
  rows, summary = [], []
  for name, entry in payload["models"].items():
    metrics = entry["metrics"]
    if "skipped" in metrics:
      rows.append([name, metrics["layer"], metrics["dim"], "n/a", "n/a", "n/a", "n/a",
                   metrics["skipped"]])
      continue
    ratio = metrics["misalignment"] / metrics["misalignment_random_basis"]
    overlap = subspace_overlap_text(metrics["subspace_overlap"],
                                    metrics["subspace_overlap_random"],
                                    metrics["subspace_k"], metrics["dim"])
    rows.append([name, metrics["layer"], metrics["dim"], f"{metrics['misalignment']:.3f}",
                 f"{metrics['misalignment_random_basis']:.3f}", f"{ratio:.2f}",
                 f"{metrics['subspace_overlap']:.3f}",
                 f"{metrics['subspace_overlap_random']:.3f}"])
    summary.append(f"{name}: first-layer misalignment {metrics['misalignment']:.3f} against "
                   f"{metrics['misalignment_random_basis']:.3f} in random bases (ratio "
                   f"{ratio:.2f}; below 1 means the filters follow the data's principal "
                   f"directions); {overlap}.")
  data = payload["data"]
  blocks = [f"Sigma_x is the covariance of the first layer's input patches on "
            f"{data['dataset']} {data['split']}. A misalignment well below the random-basis "
            "score means the filters' covariance shares the data's eigenvectors. The "
            "top-k subspace overlap is the mean squared cosine of the principal angles "
            "between the spans of the top k eigenvectors of Sigma_x and of Sigma_w: 1 for "
            "the same subspace, k/d expected for a random one.",
            report.Table(header=["model", "layer", "inputs per filter", "misalignment M",
                                 "M in random bases", "ratio", "top-k subspace overlap",
                                 "random subspace (k/d)"], rows=rows,
                         numeric=(2, 3, 4, 5, 6, 7))]
  for name, model_plots in figures.items():
    blocks += [f"Model {name}:"] + list(model_plots)
  return report.Section(title="Alignment of first-layer filters with the data",
                        summary=summary, blocks=blocks)


ANALYSIS = registry.register(registry.Analysis(
    name="alignment", title="Alignment of first-layer filters with the data",
    flags=("alignment_bases", "alignment_eigenfilters", "alignment_max_dim",
           "alignment_subspace_k"),
    run=run, section=section, needs_labels=False))
