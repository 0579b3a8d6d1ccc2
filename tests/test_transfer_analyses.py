"""The frequency-shortcut and geometry analyses inside the transfer experiment: scratch
and the random-label-pretrained model side by side, and the random-label network only
where an analysis does not read its outputs as the real classes."""
import math

import numpy as np

from conftest import TINY
from conftest import parse_flagfile
from tfrandlabels.pipeline import results
from tfrandlabels.pipeline import runner

TOP_FRACTION = 0.05
IMAGES = 2


def _models(workdir, analysis):
  return results.read(workdir, analysis)["payload"]["models"]


def test_dominant_frequencies_and_volume_element_of_a_transfer_run(embedded_dir, tmp_path):
  workdir = str(tmp_path / "work")
  experiment, cfg = parse_flagfile(
      "quick.cfg", f"--workdir={workdir}", f"--data_dir={embedded_dir}", *TINY,
      "--variants=scratch,pretrained", "--seeds=0",
      "--analyses=dominant_frequencies,volume_element",
      f"--dominant_frequencies_top_fraction={TOP_FRACTION}",
      f"--dominant_frequencies_images={IMAGES}", "--volume_planes=1", "--volume_resolution=4")
  html = open(runner.run(experiment, cfg)).read()

  dfms = _models(workdir, "dominant_frequencies")
  assert set(dfms) == {"scratch", "pretrained_k1"}
  for name, entry in dfms.items():
    metrics = entry["metrics"]
    kept = math.ceil(TOP_FRACTION * math.prod(metrics["size"]))
    for found in metrics["classes"]:
      # The top share of the frequencies, and the conjugate partner of the last one kept.
      assert kept <= found["size"] <= kept + 1, (name, found["class"], found["size"])
      assert len(found["dfm"]) == found["size"] and found["images"] == IMAGES
    radius = np.mean([found["mean_radius"] for found in metrics["classes"]])
    assert f"{name} {radius:.1f}" in html  # The comparison sentence, from the metrics.
  assert "Mean radius of the DFM frequencies" in html
  assert "planted band" not in html  # embedded has no planted bands to compare with.

  volumes = _models(workdir, "volume_element")
  assert set(volumes) == {"random_labels", "scratch", "pretrained_k1"}
  for name, entry in volumes.items():
    (region,) = entry["metrics"]["regions"]
    assert all(math.isfinite(v) for v in region["log10_volume"].values()), name
    assert region["log10_volume"]["min"] <= region["log10_volume"]["max"]
  assert "Dominant frequency maps" in html and "Input-space volume element" in html
