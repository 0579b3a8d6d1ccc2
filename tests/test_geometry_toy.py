"""The geometry_toy experiment: its nets and data, and the magnification that training
on the sinusoid task induces, through the pipeline and through analyze.py."""
import math
import os

from absl import flags
import numpy as np
import pytest
from scipy import special

from tfrandlabels import experiments
from tfrandlabels import models
from tfrandlabels.data import synthetic
from tfrandlabels.experiments import geometry_toy
from tfrandlabels.pipeline import analyze_main
from tfrandlabels.pipeline import results
from tfrandlabels.pipeline import run_main
from tfrandlabels.pipeline import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ntk_mlp_matches_its_closed_form_in_float64():
  model = models.build_model("ntk_mlp", 2, (2,), widths=(7, 5), seed=3)
  (w1, b1), (w2, b2), (w3, b3) = [(layer.kernel.numpy(), layer.bias.numpy())
                                  for layer in models.weight_layers(model)]
  x = np.random.default_rng(0).uniform(-1, 1, (4, 2))
  hidden = special.expit(special.expit(x @ w1 + b1) @ w2 / math.sqrt(7) + b2 / math.sqrt(7))
  expected = (hidden @ w3 + b3) / math.sqrt(5)
  logits = np.asarray(model(x))
  assert logits.dtype == np.float64
  # Keras's Rescaling keeps its factor 1/sqrt(fan-in) in float32: right to 1e-8.
  np.testing.assert_allclose(logits, expected, rtol=1e-7)
  # The analyze stage rebuilds the initialization from the seed.
  rebuilt = models.build_model("ntk_mlp", 2, (2,), widths=(7, 5), seed=3)
  for weights, again in zip(model.get_weights(), rebuilt.get_weights()):
    np.testing.assert_array_equal(weights, again)
  wide = models.build_model("ntk_mlp", 2, (2,), widths=(20000,), seed=0).get_layer("dense1")
  for values in (wide.kernel.numpy(), wide.bias.numpy()):
    assert np.mean(values) == pytest.approx(0, abs=0.03)
    assert np.std(values) == pytest.approx(1, abs=0.03)


def test_toy_data():
  xor = next(synthetic.xor().batch(4).as_numpy_iterator())
  np.testing.assert_array_equal(xor["image"], [[-1, -1], [-1, 1], [1, -1], [1, 1]])
  np.testing.assert_array_equal(xor["label"], [0, 1, 1, 0])
  points = next(synthetic.sinusoid(400, seed=0).batch(400).as_numpy_iterator())
  x = points["image"]
  assert x.dtype == np.float64 and x.shape == (400, 2) and np.abs(x).max() <= 1
  np.testing.assert_array_equal(points["label"], x[:, 1] > 0.6 * np.sin(7 * x[:, 0] - 1))
  assert 0.3 < points["label"].mean() < 0.7


def _parse(*args):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["run.py", *args])


def test_training_on_the_sinusoid_magnifies_the_volume_near_the_boundary(tmp_path):
  workdir = tmp_path / "work"
  _parse(f"--flagfile={os.path.join(REPO, 'geometry_toy.cfg')}", f"--workdir={workdir}",
         "--geometry_xor_steps=20", "--geometry_sinusoid_steps=500", "--geometry_deep_steps=20",
         "--steps_per_loop=20", "--log_every=20", "--checkpoint_every=500",
         "--volume_resolution=30", "--analyses=volume_element")
  experiment = experiments.get("geometry_toy")
  report = runner.run(experiment, run_main.settings(experiment))
  payload = results.read(str(workdir), "geometry_toy")["payload"]
  assert set(payload["runs"]) == {"xor", "sinusoid", "sinusoid_deep"}
  sinusoid = payload["runs"]["sinusoid"]
  assert sinusoid["batch_size"] == 50 and payload["runs"]["xor"]["batch_size"] == 4
  before, after = (sinusoid["states"][s]["layers"][-1]["volume"] for s in geometry_toy.STATES)
  # At initialization the volume element hardly follows the entropy; after training it is
  # largest where predictions are uncertain (80 x 80 grid, 2,000 steps: -0.08 -> 0.66,
  # volume ratio 0.77 -> 1.49).
  assert abs(before["rank_correlation"]) < 0.2 and before["volume_ratio"] < 1
  assert after["rank_correlation"] > before["rank_correlation"] + 0.4
  assert after["volume_ratio"] > 1.3 * before["volume_ratio"]
  assert sinusoid["states"]["trained"]["train_accuracy"] > 0.75
  assert [layer["layer"] for layer in payload["runs"]["sinusoid_deep"]["states"]["trained"][
      "layers"]] == ["act1", "act2", "act3"]
  maps = np.load(workdir / sinusoid["states"]["trained"]["maps"])
  assert maps.shape == (3, 30, 30)
  html = open(report).read()
  assert "Input-space geometry on toy tasks" in html and "Input-space volume element" in html
  assert (workdir / "figures" / "geometry_toy" / "shallow.png").exists()
  assert (workdir / "figures" / "geometry_toy" / "sinusoid_deep.png").exists()
  # The registered analysis on the pipeline's checkpoint, in the run and through
  # analyze.py, reproduces the experiment's own numbers for the trained net.
  in_run = results.read(str(workdir), "volume_element")["payload"]["models"]
  _parse(f"--model_path={workdir}", "--checkpoint=sinusoid", "--analyses=volume_element",
         f"--workdir={tmp_path / 'analyzed'}", "--volume_resolution=30")
  analyze_main.main()
  analyzed = results.read(str(tmp_path / "analyzed"), "volume_element")["payload"]["models"]
  for region in (in_run["sinusoid"]["metrics"]["regions"][0],
                 analyzed["model"]["metrics"]["regions"][0]):
    assert region["region"] == "grid [-1.5, 1.5]^2"
    for key in ("rank_correlation", "volume_ratio"):
      assert region[key] == pytest.approx(after[key], rel=1e-9)
