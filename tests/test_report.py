"""Tests for tfrandlabels.pipeline.report (the page) and .plots (its figures)."""
import base64
import html
import os
import re
import types

import matplotlib.pyplot as plt  # only to check that drawing leaves its registry empty
import numpy as np
import pytest
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from tfrandlabels.analysis import curves
from tfrandlabels.experiments import transfer
from tfrandlabels.experiments import transfer_report
from tfrandlabels.pipeline import plots, report

CONFIG = {"model": "simple_cnn", "learning_rate": 0.01, "seeds": [0, 1], "data_dir": None}


def png(seed=0):
  figure = report.new_figure(1, 1)
  figure.subplots().imshow(np.random.default_rng(seed).uniform(size=(3, 3)))
  return report.figure_png(figure)


def sample_sections():
  return [
      report.Section("First", summary=["Alpha one.", "Alpha two."], blocks=[
          "A paragraph.",
          report.Table(["run", "steps"], [["scratch", 1200], ["pretrained", 800]], numeric=[1]),
          report.Plot("curves", "Curves caption.", png(0))]),
      report.Section("Second", blocks=[report.Plot("alignment/misalignment", "Nested.", png(1))]),
      report.Section("Third", summary=["Gamma."]),
  ]


def read(path, mode="r"):
  with tf.io.gfile.GFile(path, mode) as f:
    return f.read()


def between(page, start, end):
  return page[page.index(start):page.index(end)]


def test_sections_follow_the_summary_and_the_configuration_comes_last(tmp_path):
  page = read(report.render(str(tmp_path), title="Report", sections=sample_sections(),
                            config=CONFIG))
  assert re.findall(r"<h[12]>(.*?)</h[12]>", page) == [
      "Report", "Summary", "First", "Second", "Third"]
  summary = between(page, "<h2>Summary</h2>", "<h2>First</h2>")
  assert re.findall(r"<li>(.*?)</li>", summary) == ["Alpha one.", "Alpha two.", "Gamma."]
  first = between(page, "<h2>First</h2>", "<h2>Second</h2>")
  assert first.index("<p>A paragraph.</p>") < first.index("<table>") < first.index("<figure>")
  assert ('<tr><th>run</th><th class="number">steps</th></tr>'
          '<tr><td>scratch</td><td class="number">1200</td></tr>') in first
  assert page.index("<details>") > page.index("<h2>Third</h2>")
  details = page[page.index("<details>"):]
  assert details.startswith("<details><summary>Configuration (4 flags)</summary><table>")
  assert details.endswith("</table></details></body></html>\n")
  assert re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td></tr>", details) == [
      ("data_dir", "null"), ("learning_rate", "0.01"), ("model", "simple_cnn"),
      ("seeds", "[0, 1]")]


def test_summary_is_omitted_without_sentences(tmp_path):
  page = read(report.render(str(tmp_path), title="T", config={"flag": 1},
                            sections=[report.Section("Only", blocks=["Text."])]))
  assert re.findall(r"<h[12]>(.*?)</h[12]>", page) == ["T", "Only"]
  assert "<ul>" not in page
  assert "<summary>Configuration (1 flag)</summary>" in page


def test_every_text_is_escaped(tmp_path):
  evil = "<b>&\"'"
  section = report.Section(f"title {evil}", summary=[f"summary {evil}"], blocks=[
      f"paragraph {evil}", report.Table([f"header {evil}"], [[f"cell {evil}"]]),
      report.Plot("figure", f"caption {evil}", png())])
  page = read(report.render(str(tmp_path), title=f"page {evil}", sections=[section],
                            config={f"flag {evil}": f"value {evil}"}))
  escaped = html.escape(evil, quote=True)
  for field in ("page", "title", "summary", "paragraph", "header", "cell", "caption", "flag",
                "value"):
    assert f"{field} {escaped}" in page, field
  assert "<b>" not in page


@pytest.mark.parametrize("workdir_kind", ["local", "ram"])
def test_plots_are_written_to_figures_and_embedded(tmp_path, workdir_kind):
  workdir = (str(tmp_path / "work") if workdir_kind == "local"
             else f"ram://report_test/{tmp_path.name}/work")
  sections = sample_sections()
  path = report.render(workdir, title="Report", sections=sections, config=CONFIG)
  assert path == os.path.join(workdir, "report.html")
  page = read(path)
  given = {"curves": sections[0].blocks[2].png, "alignment/misalignment": sections[1].blocks[0].png}
  embedded = [base64.b64decode(data)
              for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)]
  assert embedded == list(given.values())
  for name, data in given.items():
    assert read(os.path.join(workdir, "figures", f"{name}.png"), "rb") == data
  assert not re.search(r'(src|href)="(?!data:)', page)
  assert "<script" not in page and "<link" not in page
  assert not tf.io.gfile.glob(os.path.join(workdir, "*.tmp-*"))


def test_new_figure_has_its_own_agg_canvas_and_figure_png_is_a_png():
  figure = report.new_figure(2, 1)
  assert isinstance(figure.canvas, FigureCanvasAgg)
  figure.subplots().plot([0, 1], [1, 0])
  data = report.figure_png(figure)
  assert data.startswith(report.PNG_SIGNATURE)
  height, width, _ = tf.io.decode_png(data).shape
  assert width > height > 50


@pytest.mark.parametrize("make, match", [
    (lambda: report.Plot("a b", "", png()), r"Plot.name 'a b' must be letters"),
    (lambda: report.Plot("../up", "", png()), r"Plot.name '../up' must be letters"),
    (lambda: report.Plot("/root", "", png()), r"Plot.name '/root' must be letters"),
    (lambda: report.Plot("a//b", "", png()), r"Plot.name 'a//b' must be letters"),
    (lambda: report.Plot("a.png", "", png()), r"Plot.name 'a.png' must be letters"),
    (lambda: report.Plot("", "", png()), r"Plot.name '' must be letters"),
    (lambda: report.Plot("x", "", b"GIF89a\x01\x00"), r"Plot.png of 'x' must be the bytes"),
    (lambda: report.Plot("x", "", "not bytes"), r"Plot.png of 'x' must be the bytes"),
    (lambda: report.Table(["a", "b"], [["1"]]), r"Table.rows\[0\] has 1 cells"),
    (lambda: report.Table(["a"], [], numeric=[1]), r"Table.numeric: column 1"),
    (lambda: report.Table("ab", []), r"Table.header must be a list or tuple"),
    (lambda: report.Section("S", summary="One sentence."),
     r"Section 'S': summary must be a list or tuple"),
    (lambda: report.Section("S", blocks=[{"png": b""}]),
     r"Section 'S': blocks\[0\] must be a paragraph \(str\), a Table or a Plot, got dict"),
])
def test_bad_parts_raise_value_error(make, match):
  with pytest.raises(ValueError, match=match):
    make()


@pytest.mark.parametrize("sections, config, match", [
    ([report.Section("A", blocks=[report.Plot("x", "", png())]),
      report.Section("B", blocks=[report.Plot("x", "", png())])], {},
     r"plot name 'x' is used in section 'A' and again in 'B'"),
    (["not a section"], {}, r"sections\[0\] must be a report.Section, got str"),
    ("First", {}, r"sections must be a list or tuple"),
    ([], [("flag", 1)], r"config must map flag names to values"),
])
def test_bad_render_arguments_raise_before_writing(tmp_path, sections, config, match):
  workdir = str(tmp_path / "work")
  with pytest.raises(ValueError, match=match):
    report.render(workdir, title="T", sections=sections, config=config)
  assert not tf.io.gfile.exists(workdir)


def learning_curve(seeds):
  histories = [[{"step": step, "accuracy": min(1.0, step / 150 + 0.05 * seed),
                 "loss": 2.0 / (1 + step / 50) * (1 + 0.2 * seed)}
                for step in range(25, 201, 25)] for seed in range(seeds)]
  return curves.learning_curves(histories)


@pytest.mark.parametrize("seeds, label", [
    (1, "scratch: mean of 1 seed"),
    (2, "scratch: mean of 2 seeds"),
    (3, "scratch: mean of 3 seeds ± 95% t-interval of the mean"),
    (5, "scratch: mean of 5 seeds ± 95% t-interval of the mean"),
])
def test_learning_curves_draw_a_band_only_with_three_seeds_or_more(seeds, label):
  curve = learning_curve(seeds)
  figure = plots.learning_curves({"scratch": curve}, target=0.9)
  accuracy_axes, loss_axes = figure.axes
  bands = [[c for c in axes.collections if isinstance(c, PolyCollection)]
           for axes in (accuracy_axes, loss_axes)]
  assert [len(b) for b in bands] == ([1, 1] if seeds >= 3 else [0, 0])
  if bands[0]:
    top = np.asarray(curve["accuracy_mean"]) + np.asarray(curve["accuracy_ci95"])
    assert bands[0][0].get_paths()[0].vertices[:, 1].max() == pytest.approx(top.max())
  legend, = figure.legends
  assert [text.get_text() for text in legend.get_texts()] == [label, "target accuracy 0.9"]


def test_learning_curves_draw_every_seed_thin_and_the_mean_bold():
  runs = {"scratch": learning_curve(2), "pretrained_k1": learning_curve(3)}
  accuracy_axes, loss_axes = plots.learning_curves(runs, target=0.9).axes
  for axes, metric in ((accuracy_axes, "accuracy"), (loss_axes, "loss")):
    for index, curve in enumerate(runs.values()):
      lines = [line for line in axes.lines if to_rgba(line.get_color()) == to_rgba(f"C{index}")]
      thin = [line for line in lines if line.get_linewidth() < 1]
      bold = [line for line in lines if line.get_linewidth() >= 2]
      assert len(thin) == curve["seeds"] and len(bold) == 1 and len(lines) == len(thin) + 1
      assert all(line.get_alpha() < 1 for line in thin)
      np.testing.assert_allclose([line.get_ydata() for line in thin], curve[f"{metric}_per_seed"])
      np.testing.assert_allclose(bold[0].get_ydata(), curve[f"{metric}_mean"])
  target, = [line for line in accuracy_axes.lines if line.get_linestyle() == "--"]
  assert list(target.get_ydata()) == [0.9, 0.9]
  assert loss_axes.get_yscale() == "log"


def test_learning_curves_need_per_seed_curves():
  curve = learning_curve(2)
  del curve["loss_per_seed"]
  with pytest.raises(ValueError, match=r"runs\['scratch'\] is missing \['loss_per_seed'\]"):
    plots.learning_curves({"scratch": curve}, target=0.9)


def alignment_track(rng, records=5):
  return {"sigma": [0.1, 1.0, 3.0], "step": list(range(0, 10 * records, 10)),
          "misalignment": rng.uniform(0.1, 1, records).tolist(),
          "misalignment_random_basis": rng.uniform(1, 2, records).tolist(),
          "transfer_function": rng.uniform(size=(records, 3)).tolist()}


def attribution_inputs(rng, channels=3):
  maps = {name: {"saliency": rng.uniform(size=(2, 8, 8)), "gradcam++": rng.uniform(size=(2, 8, 8))}
          for name in ("scratch", "pretrained_k1")}
  images = rng.integers(0, 256, size=(2, 8, 8, channels), dtype=np.uint8)
  return {"images": images, "labels": [3, 1], "class_names": [f"class{i}" for i in range(5)],
          "maps": maps}


def test_every_plot_is_a_figure_and_pyplot_stays_empty():
  rng = np.random.default_rng(0)
  alignment = {"upstream": alignment_track(rng), "downstream": alignment_track(rng),
               "eigenfilters": {"data": rng.normal(size=(4, 3, 3, 3)).tolist(),
                                "pretrained": rng.normal(size=(4, 3, 3, 3)).tolist()}}
  gaussian = {name: {"dim": 3, "widths": [8, 4], "samples": 100, "seeds": seeds,
                     "shape": "flat", "variance": [0.1, 1.0, 3.0], "first_step": 10,
                     "last_step": 40, **{k: rng.uniform(size=3).tolist()
                                         for k in ("first_mean", "last_mean", "last_sd")}}
              for name, seeds in (("d3_w8x4_n100", [0, 1]), ("d3_w16_n100", [0]))}
  figures = {
      "learning_curves": plots.learning_curves({"scratch": learning_curve(3)}, 0.9),
      "attribution": plots.attribution(**attribution_inputs(rng)),
      "attribution_gray": plots.attribution(**{**attribution_inputs(rng, channels=1),
                                               "class_names": None}),
      "transfer_function": plots.transfer_function(alignment),
      "transfer_function_upstream": plots.transfer_function({"upstream": alignment["upstream"]}),
      "misalignment": plots.misalignment(alignment),
      "eigenfilters": plots.eigenfilters(alignment),
      "gaussian": plots.gaussian(gaussian),
  }
  assert {name: len(figure.axes) for name, figure in figures.items()} == {
      "learning_curves": 2, "attribution": 2 * 5, "attribution_gray": 2 * 5,
      "transfer_function": 2, "transfer_function_upstream": 1, "misalignment": 1,
      "eigenfilters": 2 * 4, "gaussian": 2}
  assert len(figures["misalignment"].axes[0].lines) == 4
  for figure in figures.values():
    assert isinstance(figure, Figure) and isinstance(figure.canvas, FigureCanvasAgg)
    assert report.figure_png(figure).startswith(report.PNG_SIGNATURE)
  assert plt.get_fignums() == []


@pytest.mark.parametrize("change, match", [
    (lambda a: a["maps"]["scratch"].pop("gradcam++"),
     r"maps\['scratch'\] is missing 'gradcam\+\+'"),
    (lambda a: a.update(images=a["images"][:1], labels=[3]), r"must have shape \(1, 8, 8\)"),
    (lambda a: a.update(images=a["images"] / 255.0), "images must be uint8"),
    (lambda a: a.update(labels=[3]), "labels must hold one label per image"),
    (lambda a: a.update(maps={}), "maps must map at least one model"),
])
def test_attribution_bad_input(change, match):
  inputs = attribution_inputs(np.random.default_rng(0))
  change(inputs)
  with pytest.raises(ValueError, match=match):
    plots.attribution(**inputs)


@pytest.mark.parametrize("draw", [plots.transfer_function, plots.misalignment])
def test_alignment_figures_need_a_track_with_records(draw):
  with pytest.raises(ValueError, match="alignment holds no track"):
    draw({"upstream": {**alignment_track(np.random.default_rng(0)), "step": []}})


def test_no_module_of_the_package_imports_pyplot_or_sets_the_backend():
  # Checked in the source: keras imports pyplot itself when TensorFlow loads.
  package = os.path.dirname(os.path.dirname(plots.__file__))
  forbidden = re.compile(r"^\s*(import matplotlib\.pyplot|from matplotlib\.pyplot import|"
                         r"from matplotlib import.*\bpyplot\b)|matplotlib\.use\(", re.MULTILINE)
  assert all(forbidden.search(line) for line in (
      "import matplotlib.pyplot as plt", "from matplotlib import cm, pyplot",
      "from matplotlib.pyplot import figure", 'matplotlib.use("Agg")'))
  sources = tf.io.gfile.glob(os.path.join(package, "*.py")) + tf.io.gfile.glob(
      os.path.join(package, "*", "*.py"))
  assert plots.__file__ in sources
  assert [path for path in sources if forbidden.search(read(path))] == []


def test_transfer_depth_points_and_figure():
  """Variants run at several k give one point per k (scratch and single-k variants none);
  each point's error bar spans its bootstrap interval."""
  def entry(variant, k, ratio, low=None, high=None):
    speedup = None if variant == "scratch" else {"ratio": ratio, "ci95_low": low,
                                                  "ci95_high": high}
    return {"variant": variant, "transfer_layers": k, "speedup_over_scratch": speedup}
  variants = {"scratch": entry("scratch", 1, None),
              "pretrained_k2": entry("pretrained", 2, 0.9, 0.7, 1.1),
              "pretrained_k1": entry("pretrained", 1, 1.5, 1.2, 1.8),
              "covariance_k1": entry("covariance", 1, 1.3)}
  depths = transfer_report._depths(variants)
  assert depths == {"pretrained": [{"k": 1, "ratio": 1.5, "ci95_low": 1.2, "ci95_high": 1.8},
                                   {"k": 2, "ratio": 0.9, "ci95_low": 0.7, "ci95_high": 1.1}]}
  figure = plots.speedup_by_depth(depths)
  axes = figure.axes[0]
  bars = [c for c in axes.collections if c.get_segments()]
  np.testing.assert_allclose([s[:, 1] for s in bars[0].get_segments()],
                             [[1.2, 1.8], [0.7, 1.1]])
  # One variant sits at its k; several are drawn a little apart.
  np.testing.assert_array_equal(axes.containers[0].lines[0].get_xdata(), [1, 2])
  two = plots.speedup_by_depth({**depths, "no_rescaling": depths["pretrained"]}).axes[0]
  np.testing.assert_allclose([c.lines[0].get_xdata() for c in two.containers],
                             [[0.9, 1.9], [1.1, 2.1]])
  assert sorted(t.get_text() for t in axes.get_legend().get_texts()) == ["pretrained",
                                                                     "scratch (1x)"]
  assert plt.get_fignums() == []


def _transfer_envelope(downstream_labels):
  """results/transfer.json of a fake run: scratch and pretrained at k = 1, 2, 3 seeds."""
  cfg = types.SimpleNamespace(target_accuracy=0.5, seeds=[0, 1, 2])
  def history(speed, seed):  # accuracy reaches 0.5 at step 10 * (speed + seed)
    return [{"step": s, "accuracy": min(1.0, s / (20 * (speed + seed))), "loss": 2.0 - s / 100,
             "eval_accuracy": 0.1} for s in range(10, 110, 10)]
  runs = [("scratch", 0, 5), ("pretrained", 1, 2), ("pretrained", 2, 3)]
  scratch = [10 * (5 + seed) for seed in cfg.seeds]
  variants = {transfer.run_name(v, k): transfer.variant_results(
      cfg, v, k, [history(speed, seed) for seed in cfg.seeds], scratch, 10)
              for v, k, speed in runs}
  payload = {"target_accuracy": 0.5, "variants": variants, "tracks": {},
             "pretrain": {"steps": 100, "final_train_accuracy": 0.9,
                          "realized_label_noise": 0.9}}
  return {"config": {"downstream_labels": downstream_labels}, "payload": payload}


def test_transfer_report_says_which_labels_finetuning_fitted():
  """Random downstream labels get their own figures (named and titled so), no test
  accuracy (at chance by construction), and a summary that says why; real labels keep
  the figure names and the test accuracy column."""
  def parts(labels):
    section, = transfer_report.sections(None, _transfer_envelope(labels))
    plots_ = [b.name for b in section.blocks if isinstance(b, report.Plot)]
    table, = [b for b in section.blocks if isinstance(b, report.Table) and "run" in b.header]
    return section, plots_, table
  section, names, table = parts("random")
  assert names == ["learning_curves_random_labels", "transfer_depth_random_labels"]
  assert "final test accuracy" not in table.header
  assert any("test accuracy is at chance" in line for line in section.summary)
  assert not any(line.startswith("Final test accuracy") for line in section.summary)
  assert "fresh random labels" in section.blocks[0]
  section, names, table = parts("real")
  assert names == ["learning_curves", "transfer_depth"]
  assert table.header[-1] == "final test accuracy" and len(table.rows[0]) == 5
  assert any(line.startswith("Final test accuracy") for line in section.summary)
  assert "with the true labels" in section.blocks[0]
  # Speed-ups from the fake curves: scratch 60 steps on average, pretrained_k1 30.
  assert table.rows[1][0] == "pretrained_k1" and table.rows[1][3].startswith("2.00x")


def test_transfer_figures_carry_their_title():
  depths = {"pretrained": [{"k": 1, "ratio": 1.5, "ci95_low": 1.2, "ci95_high": 1.8}]}
  assert plots.speedup_by_depth(depths, title="T").axes[0].get_title() == "T"
  assert plots.speedup_by_depth(depths).axes[0].get_title() == ""
