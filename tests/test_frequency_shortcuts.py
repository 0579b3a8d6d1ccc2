"""The frequency_shortcuts experiment: a small model trained on a planted-band set finds
the planted bands and shortcuts; the flagfiles parse; the CIFAR flagfile runs on mock data."""
import json
import os
import subprocess
import sys

from absl import flags
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import write_tfds_metadata
from tfrandlabels import experiments
from tfrandlabels import models
from tfrandlabels.errors import ConfigError
from tfrandlabels.pipeline import results
from tfrandlabels.pipeline import run_main
from tfrandlabels.pipeline import runner
from tfrandlabels.training import optim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(flagfile, *extra):
  """The experiment and settings of a flagfile plus overrides, parsed in process."""
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["run.py", f"--flagfile={os.path.join(REPO, flagfile)}", *extra])
  experiment = experiments.get(flags.FLAGS.experiment)
  return experiment, run_main.settings(experiment)


@pytest.fixture(scope="module")
def trained(planted_dir, tmp_path_factory):
  """shortcuts.cfg on planted_high alone, shorter, with a DFM the size of a band."""
  workdir = str(tmp_path_factory.mktemp("shortcuts") / "work")
  experiment, cfg = parse(
      "shortcuts.cfg", f"--workdir={workdir}", f"--data_dir={planted_dir}",
      "--shortcuts_datasets=planted_high", "--shortcuts_steps=200", "--log_every=50",
      "--steps_per_loop=50", "--learning_order_images=200",
      "--dominant_frequencies_images=16", "--dominant_frequencies_top_fraction=0.03",
      "--shortcut_test_shifts=noise:0.05")
  report = runner.run(experiment, cfg)
  return workdir, report


def metrics(workdir, analysis):
  return results.read(workdir, analysis)["payload"]["models"]["planted_high"]["metrics"]


def test_the_model_learns_the_planted_band_and_only_from_high_frequencies(trained):
  workdir, _ = trained
  run = results.read(workdir, "frequency_shortcuts")["payload"]["runs"]["planted_high"]
  assert run["test_accuracy"] >= 0.9 and run["planted_band"] == [10.0, 15.0]
  order = run["learning_order"]
  assert order["step"] == [50, 100, 150, 200]
  # The classes differ only at radii 10 to 15: a low-pass copy (r <= 5) carries nothing.
  assert order["steps_to_target"]["low_pass_5"] is None
  assert order["accuracy"]["low_pass_5"][-1] < 0.25
  assert order["steps_to_target"]["high_pass_5"] is not None


def test_dfms_lie_in_the_planted_bands_and_alone_keep_the_class(trained):
  workdir, _ = trained
  found = metrics(workdir, "dominant_frequencies")["classes"]
  inside = [c["in_band_fraction"] for c in found]
  assert np.mean(inside) >= 0.7 and min(inside) >= 0.5, inside
  assert all(c["radial_band"] == "high" for c in found)
  tests = metrics(workdir, "shortcut_test")
  rates = tests["sources"]["in_distribution"]
  assert min(rates["tpr"]) >= 0.9, rates
  # The classes differ in nothing but their band, so any image reduced to class c's
  # band looks like class c to a model that learned the task: FPR is high too, and
  # with the default --shortcut_test_max_fpr=0.1 no class is called a shortcut.
  assert min(rates["fpr"]) >= 0.5 and not any(rates["shortcut"]), rates
  assert set(tests["sources"]) == {"in_distribution", "noise:0.05"}


def test_the_report_shows_learning_order_bands_and_shortcuts(trained):
  workdir, report = trained
  html = tf.io.gfile.GFile(report).read()
  for text in ("Learning order of frequencies", "Dominant frequency maps",
               "Frequency shortcut test", "its DFM alone keeps 100% TPR",
               "lies in its planted band"):
    assert text in html
  for figure in ("frequency_shortcuts/planted_high_learning_order.png",
                 "dominant_frequencies/planted_high_dfm.png",
                 "class_spectra/planted_high_adcs.png", "shortcut_test/planted_high_rates.png"):
    assert tf.io.gfile.exists(os.path.join(workdir, "figures", figure))


def test_strided_cnn_outputs_logits_from_two_strided_convolutions():
  model = models.build_model("strided_cnn", 10, (32, 32, 3), seed=0)
  assert [layer.name for layer in models.weight_layers(model)] == ["conv1", "conv2", "logits"]
  assert model.get_layer("conv2").output.shape[1:] == (8, 8, 32)
  logits = model(np.zeros((2, 32, 32, 3), np.float32))
  assert logits.shape == (2, 10) and logits.dtype == tf.float32
  with pytest.raises(ValueError, match="same length"):
    models.build_model("strided_cnn", 10, (32, 32, 3), widths=(8, 8), kernel_sizes=(3,))


def test_analyze_on_the_checkpoint_gives_the_pipelines_numbers(trained, tmp_path):
  workdir, _ = trained
  process = subprocess.run(
      [sys.executable, os.path.join(REPO, "pipelines", "analyze.py"),
       f"--model_path={workdir}", "--checkpoint=planted_high", "--analyses=shortcut_test",
       "--dominant_frequencies_images=16", "--dominant_frequencies_top_fraction=0.03",
       "--shortcut_test_shifts=noise:0.05", f"--workdir={tmp_path / 'out'}"],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert process.returncode == 0, process.stderr[-3000:]
  analysed = json.loads((tmp_path / "out" / "results" / "shortcut_test.json").read_text())
  assert analysed["payload"]["models"]["model"]["metrics"] == metrics(workdir, "shortcut_test")


def test_models_of_several_data_sets_each_get_their_own_data(planted_dir, tmp_path):
  experiment, cfg = parse("shortcuts.cfg", f"--workdir={tmp_path}",
                          f"--data_dir={planted_dir}",
                          "--shortcuts_datasets=planted_mid,planted_high")
  from tfrandlabels.pipeline.context import Context  # pylint: disable=import-outside-toplevel
  data = experiment.analysis_data(Context(cfg, tf.distribute.get_strategy()))
  assert data.for_model("planted_high").dataset == "planted_high"
  assert data.for_model("planted_mid").dataset == "planted_mid"
  assert data.describe()["dataset"] == "planted_mid,planted_high"
  with pytest.raises(ConfigError, match="one model per data set"):
    data.for_model("model")


@pytest.mark.parametrize("flagfile, datasets", [
    ("shortcuts.cfg", ["planted_low", "planted_mid", "planted_high"]),
    ("shortcuts_cifar.cfg", [])])
def test_flagfiles_parse(flagfile, datasets):
  experiment, cfg = parse(flagfile)
  assert experiment.name == "frequency_shortcuts" and cfg.shortcuts_datasets == datasets


def test_cifar_flagfile_is_the_papers_setting():
  _, cfg = parse("shortcuts_cifar.cfg")
  assert (cfg.dataset, cfg.model, cfg.optimizer, cfg.learning_rate, cfg.momentum,
          cfg.nesterov, cfg.weight_decay, cfg.batch_size) == (
              "cifar10", "resnet18", "sgd", 0.01, 0.9, True, 1e-4, 64)


def test_nesterov_needs_sgd(tmp_path):
  assert optim.make_optimizer("sgd", 0.01, nesterov=True).nesterov
  with pytest.raises(ValueError, match="nesterov=True needs optimizer='sgd'"):
    optim.make_optimizer("adam", 0.01, nesterov=True)
  experiment, cfg = parse("shortcuts.cfg", f"--workdir={tmp_path}", "--nesterov")
  with pytest.raises(ConfigError, match="--nesterov needs --optimizer=sgd"):
    runner.run(experiment, cfg)


def test_cifar_flagfile_runs_on_mock_data(tmp_path):
  data_dir = str(tmp_path / "data")
  write_tfds_metadata("cifar10", data_dir, {"train": 50000, "test": 10000})
  workdir = f"ram://{tmp_path}/work"
  experiment, cfg = parse(
      "shortcuts_cifar.cfg", f"--workdir={workdir}", f"--data_dir={data_dir}",
      "--shortcuts_steps=2", "--batch_size=16", "--steps_per_loop=1", "--log_every=1",
      "--image_size=8", "--learning_order_radii=2", "--learning_order_images=16",
      "--dominant_frequencies_images=1", "--shortcut_test_shifts=blur:1")
  with tfds.testing.mock_data(num_examples=64, data_dir=data_dir):
    report = runner.run(experiment, cfg)
  run = results.read(workdir, "frequency_shortcuts")["payload"]["runs"]["cifar10"]
  assert run["learning_order"]["step"] == [1, 2] and run["planted_band"] is None
  assert set(run["learning_order"]["accuracy"]) == {"unfiltered", "low_pass_2", "high_pass_2"}
  for analysis in ("class_spectra", "dominant_frequencies", "shortcut_test"):
    assert "cifar10" in results.read(workdir, analysis)["payload"]["models"]
  assert tf.io.gfile.exists(report)
