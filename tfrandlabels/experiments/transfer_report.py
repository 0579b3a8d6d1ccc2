"""The transfer experiment's report sections: what it did, what it found, in numbers."""
from tfrandlabels.analyses import alignment as alignment_analysis
from tfrandlabels.analysis import curves
from tfrandlabels.pipeline import plots
from tfrandlabels.pipeline import report
from tfrandlabels.pipeline import results
from tfrandlabels.training.transfer import VARIANTS

VARIANT_DESCRIPTIONS = {
    "scratch": "every layer freshly initialized: the baseline.",
    "pretrained": "the first k layers copied from the random-label network, each kernel "
                  "rescaled to the norm of a fresh initialization, so that what transfers "
                  "is the direction of the weights, not their growth during pretraining.",
    "no_rescaling": "the first k layers copied from the random-label network as they are.",
    "covariance": "the first k layers drawn afresh from a Gaussian with the covariance of "
                  "the pretrained filters: does the filters' covariance alone explain the "
                  "transfer?",
}
TRACK_LABELS = {"upstream": "pretraining on random labels",
                "downstream": "finetuning from scratch"}
# --downstream_labels=random: finetuning memorizes fresh random labels. Its figures get
# their own names and titles, and test accuracy (against the true test labels) is left
# out, since a network fitted to random labels is at chance there by construction.
DOWNSTREAM = {False: "with the true labels",
              True: "with fresh random labels (drawn independently of the upstream ones, "
                    "so finetuning measures how fast the network memorizes)"}
RANDOM_TITLE = "Downstream with random labels"
RANDOM_CAPTION = " on fresh random labels (the speed of memorization)"
RANDOM_SUMMARY = ("Downstream labels were random, so test accuracy is at chance by "
                  "construction and is not reported; the speed-ups measure memorization.")


def _figure_name(name, random_labels):
  return f"{name}_random_labels" if random_labels else name


def _runs_table(variants, random_labels):
  """Steps to target and speed-up per run, and final test accuracy for real labels."""
  header = ["run", "seeds", "steps to target (mean; per seed)", "speed-up over scratch"]
  rows = [[n, len(e["seeds"]), _steps(e), _speedup(e)] for n, e in variants.items()]
  if random_labels:
    return report.Table(header=header, rows=rows, numeric=(1, 3))
  return report.Table(header=header + ["final test accuracy"],
                      rows=[row + [_accuracy(e["final_test_accuracy"])]
                            for row, e in zip(rows, variants.values())], numeric=(1, 3, 4))


def _percent(value):
  return "n/a" if value is None else f"{100 * value:.1f}%"


def _steps(entry):
  steps = entry["steps_to_target"]
  per_seed = "; ".join("not reached" if s is None else f"{s:,}" for s in steps["per_seed"])
  if steps["mean"] is None:
    missed = sum(s is None for s in steps["per_seed"])
    return f"not reached by {missed} of {len(steps['per_seed'])} seeds ({per_seed})"
  return f"{steps['mean']:,.0f} ({per_seed})"


def _speedup(entry):
  speedup = entry["speedup_over_scratch"]
  if speedup is None:
    return "n/a (no scratch run)"
  if speedup["ratio"] is None:
    return "n/a (a seed did not reach the target)"
  if speedup["ci95_low"] is None:
    return f"{speedup['ratio']:.2f}x"
  return f"{speedup['ratio']:.2f}x [{speedup['ci95_low']:.2f}, {speedup['ci95_high']:.2f}]"


def _accuracy(final):
  return f"{_percent(final['mean'])} ± {_percent(final['ci95'])}"


def _ordered(variants):
  """Runs in the order of `transfer.VARIANTS` (scratch first), then by depth."""
  return dict(sorted(variants.items(), key=lambda item: (
      VARIANTS.index(item[1]["variant"]), item[1]["transfer_layers"])))


def _summary(payload, random_labels):
  """The headline findings: speed-ups with intervals, test accuracy, alignment."""
  variants, target = _ordered(payload["variants"]), payload["target_accuracy"]
  lines = []
  for name, entry in variants.items():
    if name == "scratch":
      continue
    speedup = entry["speedup_over_scratch"]
    if speedup is None or speedup["ratio"] is None:
      lines.append(f"{name}: no speed-up can be computed ({_speed_reason(entry, variants)}).")
      continue
    interval = (" (no interval with fewer than 3 seeds)" if speedup["ci95_low"] is None else
                f", 95% bootstrap interval over seeds [{speedup['ci95_low']:.2f}, "
                f"{speedup['ci95_high']:.2f}]")
    lines.append(f"{name} reached {target:.0%} train accuracy in "
                 f"{entry['steps_to_target']['mean']:,.0f} steps against "
                 f"{variants['scratch']['steps_to_target']['mean']:,.0f} from scratch: "
                 f"{speedup['ratio']:.2f}x{interval}, {len(entry['seeds'])} seeds.")
  lines.append(_stability(variants))
  if random_labels:
    lines.append(RANDOM_SUMMARY)
  else:
    seeds = max(len(entry["seeds"]) for entry in variants.values())
    lines.append(f"Final test accuracy (mean ± 95% t-interval, {seeds} seeds): " + ", ".join(
        f"{name} {_accuracy(entry['final_test_accuracy'])}"
        for name, entry in variants.items()) + ".")
  upstream = payload["tracks"].get("upstream")
  if upstream and upstream["step"]:
    lines.append(
        f"During pretraining the first layer's misalignment with the data went from "
        f"{upstream['misalignment'][0]:.3f} to {upstream['misalignment'][-1]:.3f} (random-"
        f"basis baseline {upstream['misalignment_random_basis'][0]:.3f} to "
        f"{upstream['misalignment_random_basis'][-1]:.3f}) over {upstream['step'][-1]:,} "
        "steps.")
    lines.append(_subspace_overlap(upstream))
    layers = results.forward_layers(upstream)
    if len(layers) > 1:  # One layer: the sentences above say it.
      lines.append(_layer_alignment(layers))
  return lines


def _stability(variants):
  """Whether any finetuning run's loss spiked, which would make its speed a recovery."""
  worst = {(name, seed): ratio for name, entry in variants.items()
           for seed, ratio in zip(entry["seeds"], entry["worst_loss_over_ln_c"])}
  spiked = [f"{name} seed {seed} ({ratio:.1f} ln C)" for (name, seed), ratio in worst.items()
            if ratio > curves.SPIKE_RATIO]
  (name, seed), ratio = max(worst.items(), key=lambda item: item[1])
  if not spiked:
    return (f"No finetuning run's logged loss exceeded {curves.SPIKE_RATIO:g} ln C (the "
            f"largest: {ratio:.2f} ln C, {name} seed {seed}), so the steps to target are "
            "not recoveries from a loss spike.")
  return (f"Loss spikes (logged loss above {curves.SPIKE_RATIO:g} ln C): "
          f"{', '.join(spiked)}; their steps to target partly measure the recovery from the "
          "spike, not what the runs started from.")


def _subspace_overlap(track):
  """The last recorded subspace overlap against its baseline, and the first one."""
  dim = len(track["sigma"])
  # The baseline is k/d, so it gives back the k the hook used.
  k = round(track["subspace_overlap_random"][-1] * dim)
  text = alignment_analysis.subspace_overlap_text(
      track["subspace_overlap"][-1], track["subspace_overlap_random"][-1], k, dim)
  return (f"First-layer {text} at step {track['step'][-1]:,}; "
          f"{track['subspace_overlap'][0]:.2f} at step {track['step'][0]:,}.")


def _layer_alignment(layers):
  """Every conv layer's last recorded misalignment and overlap, against their baselines."""
  parts = []
  for name, track in layers.items():
    dim = track["dim"]
    k = round(track["subspace_overlap_random"][-1] * dim)
    parts.append(f"{name} (d = {dim}, step {track['step'][-1]:,}): M "
                 f"{track['misalignment'][-1]:.3f} against "
                 f"{track['misalignment_random_basis'][-1]:.3f} in random bases, top-{k} "
                 f"overlap {track['subspace_overlap'][-1]:.2f} against {k}/{dim} = "
                 f"{track['subspace_overlap_random'][-1]:.2f}")
  return ("Alignment of each conv layer with its own input (the previous layer's output; "
          "for the first, the image patches) at the end of pretraining: " + "; ".join(parts)
          + ".")


def _depths(variants):
  """{variant: speed-up at each k} for the variants run at more than one depth k."""
  depths = {}
  for entry in variants.values():
    speedup = entry["speedup_over_scratch"]
    if entry["variant"] != "scratch" and speedup is not None:
      depths.setdefault(entry["variant"], []).append({"k": entry["transfer_layers"], **{
          key: speedup[key] for key in ("ratio", "ci95_low", "ci95_high")}})
  return {v: sorted(points, key=lambda p: p["k"]) for v, points in depths.items()
          if len(points) > 1}


def _speed_reason(entry, variants):
  if "scratch" not in variants:
    return "no scratch run"
  missed = [n for n, e in (("scratch", variants["scratch"]), ("this run", entry))
            if e["steps_to_target"]["mean"] is None]
  return f"{' and '.join(missed)} did not reach the target with every seed"


def sections(ctx, envelope):
  """Report sections of results/transfer.json."""
  del ctx
  payload = envelope["payload"]
  variants = _ordered(payload["variants"])
  target = payload["target_accuracy"]
  kinds = dict.fromkeys(entry["variant"] for entry in variants.values())
  pretrain = payload["pretrain"]
  random_labels = envelope["config"]["downstream_labels"] == "random"
  title = RANDOM_TITLE if random_labels else None
  labels_caption = RANDOM_CAPTION if random_labels else ""
  blocks = [
      "A network is first trained on images whose labels were replaced at random "
      "(pretraining). Its first k layers are then copied into a fresh network trained "
      f"{DOWNSTREAM[random_labels]} on a disjoint downstream set (finetuning). If "
      "pretraining taught those layers something about the images, the finetuned network "
      "learns faster than one trained from scratch. Runs are named VARIANT_kK, K the "
      "number of transferred layers.",
      *(f"{kind}: {VARIANT_DESCRIPTIONS.get(kind, 'a variant defined by the run.')}"
        for kind in kinds),
      report.Table(header=["pretraining", "value"], rows=[
          ["steps", f"{pretrain['steps']:,}"],
          ["final train accuracy (random labels)", _percent(pretrain["final_train_accuracy"])],
          ["realized label noise", _percent(pretrain["realized_label_noise"])]],
                   numeric=(1,)),
  ]
  if variants:
    seeds = max(len(e["seeds"]) for e in variants.values())
    band = ("the band is the 95% t-interval of the mean" if seeds >= 3 else
            "with fewer than 3 seeds no interval is drawn")
    blocks += [
        report.Plot(name=_figure_name("learning_curves", random_labels),
                    png=report.figure_png(plots.learning_curves(
                        {n: e["curve"] for n, e in variants.items()}, target, title=title)),
                    caption=f"Train accuracy (left) and loss (right) during finetuning"
                            f"{labels_caption}: each seed thin, the mean bold; {band}. The dashed "
                            f"line is the target accuracy {target:g}."),
        f"Steps to target: the first logged step at which a run's train accuracy reaches "
        f"{target:g} (exact to the logging interval). Speed-up: mean steps of scratch over "
        f"those of the run, with a 95% bootstrap interval over seeds.",
        _runs_table(variants, random_labels)]
  depths = _depths(variants)
  if depths:
    blocks.append(report.Plot(
        name=_figure_name("transfer_depth", random_labels),
        png=report.figure_png(plots.speedup_by_depth(depths, title=title)),
        caption=f"Speed-up over scratch in finetuning{labels_caption} against the number "
                "k of layers transferred, with 95% bootstrap intervals over seeds. Maennel "
                "et al. find early layers generalize and later ones specialize: the "
                "speed-up can fall, even below 1x, as k grows."))
  tracks = {n: t for n, t in payload["tracks"].items() if t["step"]}
  if tracks:
    blocks += [
        report.Plot(name="transfer_function", png=report.figure_png(
            plots.transfer_function(tracks)),
                    caption="The first layer's transfer function f(sigma) at several points "
                            "of training: " + "; ".join(
                                f"{n}: {TRACK_LABELS[n]}" for n in tracks) + "."),
        report.Plot(name="misalignment", png=report.figure_png(plots.misalignment(tracks)),
                    caption="Misalignment between the eigenvectors of Sigma_x and Sigma_w "
                            "during training (solid), against the same score in random "
                            "orthonormal bases (dashed).")]
  layers = results.forward_layers(payload["tracks"].get("upstream", {}))
  if layers:
    blocks.append(report.Plot(
        name="layer_alignment", png=report.figure_png(plots.layer_alignment(layers)),
        caption="Each conv layer's alignment with its own input during pretraining on "
                "random labels (a pair of panels per layer, in forward order, row by row). "
                "Sigma_x of a deeper layer is the covariance of the patches of its input "
                "activations (the previous layer's output after activation and pooling) on "
                "a fixed sample of the upstream images, recomputed at each point. Top: "
                "misalignment M of Sigma_w with Sigma_x (solid) against M in random "
                "orthonormal bases (dashed); below the baseline means the filters follow "
                "their input's principal directions. Bottom: overlap of the top-k "
                "principal subspaces of Sigma_x and Sigma_w (solid) against k/d, the "
                "expected overlap of a random subspace (dashed). A layer with fewer "
                "filters than inputs per filter (d) has a singular Sigma_w: M then "
                "counts mostly the directions outside the filters' span (regularized by "
                "a ridge), so M and its baseline are both large and close, and the "
                "subspace overlap is the telling measure."))
  return [report.Section(title="Transfer after random-label pretraining",
                         summary=_summary(payload, random_labels), blocks=blocks)]
