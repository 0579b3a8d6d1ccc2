"""Figures of first-layer alignment for the report (Maennel et al., Fig. 3 and 4)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top


def _snapshots(track, count=4):
  """Indices of `count` records spread over training, first and last included."""
  total = len(track["step"])
  return sorted(set(np.linspace(0, total - 1, min(count, total)).round().astype(int)))


def transfer_function_figure(alignment):
  """f(sigma) at several points of training, upstream and downstream (Fig. 4)."""
  runs = [(name, alignment[name]) for name in ("upstream", "downstream")
          if alignment.get(name) and alignment[name]["step"]]
  fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6), squeeze=False)
  for ax, (name, track) in zip(axes[0], runs):
    for i in _snapshots(track):
      ax.plot(track["sigma"], track["transfer_function"][i], marker=".",
              label=f"step {track['step'][i]}")
    ax.set(xlabel="sigma (std of the data along an eigenvector of Sigma_x)",
           ylabel="f(sigma)", title=f"{name} ({'random' if name == 'upstream' else 'real'}"
           " labels)", xscale="log")
    ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def misalignment_figure(alignment):
  """Misalignment over training against the random-basis baseline."""
  runs = [(name, alignment[name]) for name in ("upstream", "downstream")
          if alignment.get(name) and alignment[name]["step"]]
  fig, ax = plt.subplots(figsize=(6, 3.6))
  for name, track in runs:
    line, = ax.plot(track["step"], track["misalignment"], label=f"{name}: data basis")
    ax.plot(track["step"], track["misalignment_random_basis"], linestyle="--",
            color=line.get_color(), label=f"{name}: random basis")
  ax.set(xlabel="iteration", ylabel="misalignment M", yscale="log")
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def _as_patch(filter_values):
  """Scales one filter [kh, kw, c] to [0, 1] for display (grey if one channel)."""
  patch = np.asarray(filter_values, np.float64)
  span = np.abs(patch).max() or 1.0
  patch = 0.5 + 0.5 * patch / span
  return patch[..., 0] if patch.shape[-1] == 1 else patch[..., :3]


def eigenfilter_figure(alignment):
  """Top eigenvectors of Sigma_w (pretrained filters) next to those of Sigma_x (Fig. 3)."""
  rows = [("data (Sigma_x)", alignment["eigenfilters"]["data"]),
          ("pretrained filters (Sigma_w)", alignment["eigenfilters"]["pretrained"])]
  count = len(rows[0][1])
  fig, axes = plt.subplots(2, count, figsize=(1.2 * count, 2.8), squeeze=False)
  for r, (name, filters) in enumerate(rows):
    for c in range(count):
      axes[r, c].imshow(_as_patch(filters[c]), cmap="gray", vmin=0, vmax=1,
                        interpolation="nearest")
      axes[r, c].set_xticks([])
      axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(name, fontsize=7)
  fig.tight_layout()
  return fig


def gaussian_figure(gaussian):
  """f(sigma) of the first layer for each Gaussian setting (Fig. 4 left, App. E.1)."""
  fig, axes = plt.subplots(1, len(gaussian), figsize=(4.5 * len(gaussian), 3.6),
                           squeeze=False)
  for ax, (name, run) in zip(axes[0], gaussian.items()):
    for i in _snapshots(run):
      ax.plot(run["sigma"], run["transfer_function"][i], marker=".",
              label=f"step {run['step'][i]}")
    ax.set(xlabel="sigma", ylabel="f(sigma)",
           title=f"d={run['dim']}, widths {'/'.join(map(str, run['widths']))}, "
                 f"n={run['samples']}")
    ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def figures(alignment, gaussian=None):
  """name -> (caption, Figure) for the report, in reading order."""
  result = {}
  if gaussian:
    result["gaussian"] = (
        "Gaussian inputs with random labels (Maennel et al., Fig. 4 left and App. E.1): "
        "the first layer's transfer function f(sigma) of a 2-hidden-layer network trained "
        "on x ~ N(0, Sigma_x), Sigma_x diagonal, at several points of training. Its shape "
        "is what the weights learned about the data covariance from random labels alone.",
        gaussian_figure(gaussian))
  if not alignment:
    return result
  return {**result,
      "transfer_function": (
          "Transfer function f(sigma) of the first layer at several points of training. "
          "Each point is a principal direction of the layer's input patches; f says how "
          "strongly the filters respond along it. Alignment shows as a smooth function of "
          "sigma shared by random-label and real-label training.",
          transfer_function_figure(alignment)),
      "misalignment": (
          "Misalignment between the eigenvectors of the data covariance Sigma_x and the "
          "filter covariance Sigma_w (0 = perfectly aligned), against the same score in "
          "random orthonormal bases. Training on random labels drives the data-basis "
          "score below the random-basis one.",
          misalignment_figure(alignment)),
      "eigenfilters": (
          "Top eigenvectors of Sigma_x (top row) and of the pretrained first layer's "
          "Sigma_w (bottom row), shown as image patches, largest eigenvalue first.",
          eigenfilter_figure(alignment)),
  }
