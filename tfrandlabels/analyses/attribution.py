"""Analysis `attribution`: SmoothGrad and Grad-CAM++ maps (tf-keras-vis) of the first
test images, with the model's predictions: where a model looks."""
from absl import flags
import numpy as np

from tfrandlabels.analyses import registry
from tfrandlabels.analysis import attribution
from tfrandlabels.pipeline import flags as flag_lib
from tfrandlabels.pipeline import plots
from tfrandlabels.pipeline import report

flags.DEFINE_integer("attribution_images", 4, "Analysis attribution: test images shown.")
flags.DEFINE_integer("attribution_samples", 20, "Analysis attribution: noisy copies per "
                     "image for SmoothGrad.")
flag_lib.check("attribution_images", lambda v: 1 <= v <= 16, "must be between 1 and 16")
flag_lib.check_at_least(("attribution_samples",), 1)


def run(model, data, settings):
  images, inputs, labels = data.examples(settings.attribution_images)
  labels = [int(l) for l in labels]
  maps = {"saliency": attribution.saliency_maps(
              model, inputs, labels, smooth_samples=settings.attribution_samples, seed=0),
          "gradcam++": attribution.gradcam_plus_plus(model, inputs, labels)}
  predictions = np.argmax(np.asarray(model(inputs, training=False)), axis=-1)
  figure = plots.attribution(images, labels, None, {"model": maps})
  return registry.Output(
      metrics={"labels": labels, "predictions": [int(p) for p in predictions]},
      plots={"maps": ("Each row is a test image with its true class. SmoothGrad (bright = "
                      "strong) shows how much each pixel moves the logit of that class; "
                      "Grad-CAM++ overlays (red = high) the regions of the last spatial "
                      "layer that speak for it. Maps are normalized per image to [0, 1]: "
                      "compare where models look, not the values.",
                      report.figure_png(figure))})


def section(payload, figures):
  blocks, summary = [], []
  for name, entry in payload["models"].items():
    metrics = entry["metrics"]
    right = sum(p == l for p, l in zip(metrics["predictions"], metrics["labels"]))
    blocks += [f"Model {name}: {right} of {len(metrics['labels'])} shown images classified "
               f"correctly (predictions {metrics['predictions']}, labels "
               f"{metrics['labels']})."] + list(figures[name])
  return report.Section(title="Attribution maps", summary=summary, blocks=blocks)


ANALYSIS = registry.register(registry.Analysis(
    name="attribution", title="Attribution maps",
    flags=("attribution_images", "attribution_samples"), run=run, section=section,
    needs_labels=True))
