"""Tests for tfrandlabels.pipeline.report: a self-contained HTML page and its PNG figures."""
import base64
import copy
import io
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfrandlabels.analysis import curves
from tfrandlabels.pipeline import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def synthetic_run(variant, k, reach_step, seeds=(0, 1)):
  """Results of one run name as the analyze stage writes them, from fake histories."""
  histories = [[{"step": step, "accuracy": min(1.0, step / (reach_step + 10 * seed)),
                 "loss": 2.0 / (1 + step / 50)} for step in range(25, 201, 25)]
               for seed in seeds]
  steps = [curves.steps_to_target(h, 0.9) for h in histories]
  finals = [0.6 + 0.05 * seed for seed in seeds]
  mean, half_width = curves.mean_ci95(np.array(finals)[:, None])
  return {"variant": variant, "transfer_layers": k, "seeds": list(seeds),
          "curve": curves.learning_curves(histories),
          "steps_to_target": {"per_seed": steps, "mean": float(np.mean(steps))},
          "speedup_over_scratch": None,
          "final_test_accuracy": {"per_seed": finals, "mean": float(mean[0]),
                                  "ci95": float(half_width[0])}}


@pytest.fixture()
def results():
  variants = {"scratch": synthetic_run("scratch", 0, 150),
              "pretrained_k1": synthetic_run("pretrained", 1, 75),
              "no_rescaling_k1": synthetic_run("no_rescaling", 1, 100)}
  scratch_steps = variants["scratch"]["steps_to_target"]["per_seed"]
  for entry in variants.values():
    entry["speedup_over_scratch"] = curves.speedup(
        scratch_steps, entry["steps_to_target"]["per_seed"])
  return {"config": {"model": "simple_cnn", "learning_rate": 0.01, "seeds": [0, 1],
                     "log_every": 25, "data_dir": None},
          "target_accuracy": 0.9,
          "pretrain": {"steps": 300, "final_train_accuracy": 0.97,
                       "realized_label_noise": 0.9},
          "variants": variants}


@pytest.fixture()
def attribution():
  rng = np.random.default_rng(0)
  maps = {name: {"saliency": rng.uniform(size=(2, 8, 8)), "gradcam++": rng.uniform(size=(2, 8, 8))}
          for name in ("pretrained_k1", "scratch")}
  return {"images": rng.integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8),
          "labels": [3, 1], "class_names": [f"class<{i}>" for i in range(5)], "maps": maps}


def alignment_figures():
  figure = Figure(figsize=(2, 2))
  FigureCanvasAgg(figure)
  figure.subplots().plot([0, 1], [1, 0])
  png = Figure(figsize=(1, 1))
  FigureCanvasAgg(png)
  png.subplots().imshow(np.eye(3))
  buffer = io.BytesIO()
  png.savefig(buffer, format="png")
  return {"misalignment": ("Misalignment <over> training.", figure),
          "eigenfilters": ("Top eigenfilters & patches.", buffer.getvalue())}


def read(path, mode="r"):
  with tf.io.gfile.GFile(path, mode) as f:
    return f.read()


def embedded_pngs(page):
  return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"',
                                                        page)]


@pytest.mark.parametrize("workdir_kind", ["local", "ram"])
def test_report_is_self_contained_and_writes_valid_pngs(tmp_path, workdir_kind, results,
                                                        attribution):
  workdir = str(tmp_path / "work") if workdir_kind == "local" else "ram://report_test/work"
  path = report.write_report(workdir, results, attribution=attribution,
                             alignment_figures=alignment_figures())
  assert path == os.path.join(workdir, "report.html")
  page = read(path)
  for name in ("scratch", "pretrained_k1", "no_rescaling_k1", "pretrained", "no_rescaling"):
    assert name in page
  for key in results["config"]:
    assert f"<td>{key}</td>" in page
  assert report.ALIGNMENT_HEADING in page
  assert page.index("Misalignment &lt;over&gt;") < page.index("Top eigenfilters &amp;")
  assert page.count("data:image/png;base64,") == 4
  assert not re.search(r"(src|href)=\"(https?:)?//", page)
  assert "<script" not in page and "<link" not in page
  for name in ("learning_curves", "attribution", "misalignment", "eigenfilters"):
    png = read(os.path.join(workdir, "figures", f"{name}.png"), "rb")
    assert png.startswith(PNG_SIGNATURE)
    assert png in embedded_pngs(page)
    height, width, _ = tf.io.decode_png(png).shape
    assert height > 50 and width > 50


def test_speedup_table_shows_the_computed_numbers(tmp_path, results):
  page = read(report.write_report(str(tmp_path), results))
  row = re.search(r"<tr><td>pretrained_k1</td>.*?</tr>", page).group(0)
  speedup = results["variants"]["pretrained_k1"]["speedup_over_scratch"]
  assert speedup > 1
  assert f"{speedup:.2f}×" in row
  assert "62.5% ± 31.8%" in row  # finals 0.60, 0.65: mean 0.625, t-interval 12.706 * 0.025
  assert page.count("data:image/png;base64,") == 1  # only the learning curves
  assert "Attribution" not in page and report.ALIGNMENT_HEADING not in page


def test_missing_speedups_render_as_not_reached(tmp_path, results):
  entry = results["variants"]["pretrained_k1"]
  entry["steps_to_target"] = {"per_seed": [100, None], "mean": None}
  entry["speedup_over_scratch"] = None
  no_scratch = copy.deepcopy(results)
  del no_scratch["variants"]["scratch"]
  page = read(report.write_report(str(tmp_path / "a"), results))
  row = re.search(r"<tr><td>pretrained_k1</td>.*?</tr>", page).group(0)
  assert "not reached (by 1 of 2 seeds)" in row and "<td class=\"number\">not reached</td>" in row
  results["pretrain"] = {"steps": None, "final_train_accuracy": None,
                         "realized_label_noise": None}
  assert "n/a" in read(report.write_report(str(tmp_path / "b"), results))
  assert "n/a (no scratch run)" in read(report.write_report(str(tmp_path / "c"), no_scratch))


def test_text_is_escaped(tmp_path, results):
  results["config"]["note"] = "<script>alert(1)</script>"
  page = read(report.write_report(str(tmp_path), results))
  assert "<script>" not in page
  assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize("change, match", [
    (lambda r, a, f: r.pop("variants"), r"results is missing 'variants'"),
    (lambda r, a, f: r["variants"]["scratch"].pop("curve"),
     r"results\['variants'\]\['scratch'\] is missing 'curve'"),
    (lambda r, a, f: a["maps"]["scratch"].pop("gradcam++"), "is missing 'gradcam\\+\\+'"),
    (lambda r, a, f: a.update(images=a["images"][:1], labels=[3]),
     "must have shape \\(1, 8, 8\\)"),
    (lambda r, a, f: a.update(images=a["images"] / 255.0), "must be uint8"),
    (lambda r, a, f: f.update(attribution=("caption", b"png")), "name 'attribution'"),
    (lambda r, a, f: f.update(x=("caption", b"GIF89a")), "must be a PNG file"),
    (lambda r, a, f: f.update(x="caption only"), "must be a \\(caption, Figure"),
])
def test_bad_input_raises_before_writing(tmp_path, results, attribution, change, match):
  figures = alignment_figures()
  change(results, attribution, figures)
  with pytest.raises(ValueError, match=match):
    report.write_report(str(tmp_path), results, attribution=attribution,
                        alignment_figures=figures)
  assert not tf.io.gfile.exists(str(tmp_path / "figures"))
