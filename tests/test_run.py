"""The pipeline end to end, as users run it: outputs, skipping, resume, analyses on any
model, configs, and refused input."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from absl import flags
import keras
import numpy as np
import pytest
import requests
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import REPO
from conftest import TINY
from conftest import parse_flagfile
from conftest import write_tfds_metadata
from tfrandlabels import data
from tfrandlabels import experiments
from tfrandlabels.analysis import alignment
from tfrandlabels.experiments import transfer as transfer_experiment
from tfrandlabels.pipeline import analyze_main
from tfrandlabels.pipeline import results
from tfrandlabels.pipeline import run_main
from tfrandlabels.pipeline import runner

RUN = os.path.join(REPO, "pipelines", "run.py")
ANALYZE = os.path.join(REPO, "pipelines", "analyze.py")
VARIANT_KEYS = {"variant", "transfer_layers", "seeds", "curve", "steps_to_target",
                "speedup_over_scratch", "final_test_accuracy", "worst_loss_over_ln_c"}


def _run(script, *args, wait=True):
  process = subprocess.Popen(
      [sys.executable, script, *args], cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  if not wait:
    return process
  output = process.communicate(timeout=900)[0]
  return process.returncode, output


def _stamps(folder):
  """Every file's size and modification time (ns): any write changes them. Cheaper than
  hashing the checkpoints' contents, and stricter: a rewrite of equal bytes shows too."""
  return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(embedded_dir, tmp_path_factory):
  """One tiny end-to-end run of the default configuration."""
  workdir = tmp_path_factory.mktemp("run") / "work"
  code, output = _run(RUN, f"--workdir={workdir}", f"--data_dir={embedded_dir}", *TINY)
  assert code == 0, output[-4000:]
  return workdir, output


def test_end_to_end_writes_results_and_report(finished):
  workdir, output = finished
  assert f"report: {workdir}/report.html" in output
  payload = results.read(str(workdir), "transfer")["payload"]
  assert set(payload["variants"]) == {"scratch", "pretrained_k1", "no_rescaling_k1",
                                      "covariance_k1"}
  for name, variant in payload["variants"].items():
    assert VARIANT_KEYS <= set(variant), name
    assert variant["seeds"] == [0, 1]
    assert variant["curve"]["step"] == [2, 4]
    assert np.shape(variant["curve"]["accuracy_per_seed"]) == (2, 2)
    assert len(variant["final_test_accuracy"]["per_seed"]) == 2
    for seed, worst in zip(variant["seeds"], variant["worst_loss_over_ln_c"]):
      history = workdir / "finetune" / name / f"seed{seed}" / "history.jsonl"
      losses = [json.loads(line)["loss"] for line in history.read_text().splitlines()]
      assert worst == pytest.approx(max(losses) / np.log(10))
  assert payload["pretrain"]["realized_label_noise"] == pytest.approx(0.9, abs=0.1)
  upstream = payload["tracks"]["upstream"]
  assert len(upstream["sigma"]) == 27 and upstream["step"] == [2, 4]
  assert len(upstream["transfer_function"][0]) == 27
  assert payload["tracks"]["downstream"]["step"] == [2, 4]
  assert set(results.read(str(workdir), "alignment")["payload"]["models"]) == {
      "random_labels", "scratch"}
  assert set(results.read(str(workdir), "attribution")["payload"]["models"]) == {
      "scratch", "pretrained_k1"}
  html = (workdir / "report.html").read_text()
  assert html.index("Summary") < html.index("Transfer after random-label pretraining")
  assert "ln C" in html and "subspace overlap" in html
  assert html.index("<details>") > html.index("Attribution maps")
  assert html.count("data:image/png;base64,") >= 7
  assert 'src="http' not in html
  for figure in ("learning_curves", "transfer_function", "misalignment",
                 "alignment/random_labels_eigenfilters", "attribution/scratch_maps"):
    assert (workdir / "figures" / f"{figure}.png").read_bytes()[:4] == b"\x89PNG", figure
  saved = json.loads((workdir / "flags.json").read_text())
  assert saved["experiment"] == "transfer" and saved["seeds"] == [0, 1]
  assert list((workdir / "pretrain" / "tensorboard").iterdir())


def test_second_run_trains_nothing(finished, embedded_dir):
  workdir, _ = finished
  before = _stamps(workdir)
  code, output = _run(RUN, f"--workdir={workdir}", f"--data_dir={embedded_dir}", *TINY)
  assert code == 0, output[-4000:]
  assert _stamps(workdir) == before
  assert output.count("up to date; skipping") == 6


def test_changed_analysis_setting_reruns_that_analysis_only(finished, embedded_dir, tmp_path):
  workdir = tmp_path / "copy"
  shutil.copytree(finished[0], workdir)
  before = _stamps(workdir)
  code, output = _run(RUN, f"--workdir={workdir}", f"--data_dir={embedded_dir}", *TINY,
                      "--attribution_images=3")
  assert code == 0, output[-4000:]
  assert "stage analysis/attribution: redoing (attribution_images)" in output
  after = _stamps(workdir)
  changed = {os.path.relpath(p, workdir) for p in after if before.get(p) != after[p]}
  assert changed and all(p.startswith(("analyses/attribution", "results/attribution",
                                       "figures", "report.html", "stages", "flags.json"))
                         for p in changed), changed
  labels = results.read(str(workdir), "attribution")["payload"]["models"]["scratch"]
  assert len(labels["metrics"]["labels"]) == 3


@pytest.mark.parametrize("args, message", [
    (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    (["--flagfile=missing.cfg"], "missing.cfg"),
    (["--transfer_layers=3"], "--transfer_layers=3: k=3 must be between 1 and 2"),
    (["--transfer_layers=0"], "--transfer_layers=0 must be a non-empty comma list"),
    (["--depth_variants=scratch"], "--depth_variants=scratch must be a comma list of "
                                   "pretrained, no_rescaling, covariance"),
    (["--seeds="], "--seeds= must be a non-empty comma list"),
    (["--seeds=1,1"], "--seeds=1,1 must be a non-empty comma list of distinct integers"),
    (["--downstream_split=train[100:300]"], "overlaps --upstream_split"),
    (["--pretrain_steps=5"], "holds stage pretrain run with other settings (pretrain_steps)"),
    (["--model=transformer"], "--model"),
    (["--experiment=nope"], "--experiment=nope is not one of frequency_shortcuts, gaussian, "
                           "geometry_toy, transfer"),
    (["--stages=gaussian"], "'gaussian' is not a stage of experiment transfer"),
    (["--analyses=spectra"], "--analyses=spectra is not one of alignment, attribution"),
    (["--train_filter=low_pass"], "--train_filter=low_pass must be low_pass:R"),
    (["--eval_filter=band_pass:9-3"], "--eval_filter=band_pass:9-3 must be"),
    (["--input_corruption=shuffled_pixels:2"], "--input_corruption=shuffled_pixels:2 must be"),
    (["--test_split=validation"], "has no split 'validation'"),
    (["--upstream_split=train[:0]"], "--upstream_split=train[:0] selects 0 examples"),
    (["--batch_size=500"], "selects 128 examples"),
    (["--attribution_images=0"], "--attribution_images=0 must be between 1 and 16"),
    (["--learning_rate=-1"], "--learning_rate=-1.0 must be > 0"),
    (["--warmup_steps=-1"], "--warmup_steps=-1 must be"),
    (["--model_options=filters=0"], "--model_options=filters=0: filters=0 must be an int >= 1"),
    (["--alignment_subspace_k=28"], "--alignment_subspace_k=28 must be in [1, 27]"),
    (["--volume_resolution=1"], "--volume_resolution=1 must be >= 4"),
    (["--dominant_frequencies_top_fraction=2"],
     "--dominant_frequencies_top_fraction=2.0 must be in (0, 1]"),
    ([f"--dataset=folder:{os.path.dirname(os.path.abspath(__file__))}"],
     "no image files (.png, .jpg, .jpeg, .gif, .bmp) found"),
    (["--shortcut_test_shifts=noise:x"], "--shortcut_test_shifts=noise:x must be a comma list"),
    (["--model_options=filters"], "--model_options=filters must be NAME=VALUE pairs"),
    (["--model_options=seed=3"], "(init_scale and seed have flags of their own)"),
    (["--model_options=width=3"], "--model=simple_cnn --model_options=width=3: width: unknown "
                                  "option for model='simple_cnn'; allowed: filters, hidden"),
    (["--dataset=folder:/nonexistent"], "no such directory"),
    (["extra"], "unexpected arguments"),
])
def test_bad_input_is_refused_in_one_line_without_damage(finished, embedded_dir, args,
                                                         message, capsys):
  """In process (one TensorFlow start for all cases); the real command is checked below."""
  _assert_refused(finished[0], embedded_dir, args, message, capsys)


def _assert_refused(workdir, embedded_dir, args, message, capsys):
  before = _stamps(workdir)
  flags.FLAGS.unparse_flags()
  with pytest.raises(SystemExit) as exit_info:
    run_main.run([RUN, f"--workdir={workdir}", f"--data_dir={embedded_dir}", *TINY, *args])
  output = capsys.readouterr()
  assert exit_info.value.code == 2, output
  errors = [line for line in output.err.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], output.err[-2000:]
  assert "Traceback" not in output.err + output.out
  assert _stamps(workdir) == before


def test_a_data_set_that_cannot_be_downloaded_is_one_line(tmp_path, embedded_dir, capsys,
                                                          monkeypatch):
  """As offline: TFDS's download raises requests' ConnectionError."""
  def offline(self, *args, **kwargs):
    raise requests.exceptions.ConnectionError("Max retries exceeded with url: cifar-10")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
  workdir = tmp_path / "work"
  workdir.mkdir()
  _assert_refused(workdir, embedded_dir, ["--dataset=cifar10"],
                  "name='cifar10' could not be downloaded (Max retries", capsys)
  assert not list(workdir.iterdir())


def test_the_command_prints_one_line_and_exits_2(finished, embedded_dir):
  """As a process (the refusals in process: above)."""
  workdir, _ = finished
  before = _stamps(workdir)
  code, output = _run(RUN, f"--workdir={workdir}", f"--data_dir={embedded_dir}", *TINY,
                      "--pretrain_steps=5")
  assert code == 2, output[-2000:]
  errors = [line for line in output.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, output[-2000:]
  assert "holds stage pretrain run with other settings (pretrain_steps)" in errors[0]
  assert "Traceback" not in output and "USAGE" not in output
  assert _stamps(workdir) == before


def test_failed_first_run_leaves_nothing_and_the_corrected_command_runs(embedded_dir,
                                                                         tmp_path):
  workdir = tmp_path / "work"
  code, output = _run(RUN, f"--workdir={workdir}", f"--data_dir={embedded_dir}", *TINY,
                      "--upstream_split=train[:0]", "--stages=pretrain")
  assert code == 2 and "--upstream_split=train[:0] selects 0 examples" in output
  assert not workdir.exists()
  code, output = _run(RUN, f"--workdir={workdir}", f"--data_dir={embedded_dir}", *TINY,
                      "--stages=pretrain")
  assert code == 0, output[-3000:]


def test_a_preempted_finetune_saves_at_its_next_log_step_and_resumes(embedded_dir, tmp_path):
  """A preempted run (SIGTERM) saves a checkpoint at its next log step, says so in one
  line, exits with 4 and resumes from it. (A killed run resuming: test_recovery.)"""
  workdir = tmp_path / "work"
  args = [f"--workdir={workdir}", f"--data_dir={embedded_dir}", *TINY,
          "--finetune_steps=40", "--variants=scratch", "--seeds=0",
          "--stages=pretrain,finetune"]
  process = _run(RUN, *args, wait=False)
  run_dir = workdir / "finetune" / "scratch" / "seed0"
  deadline = time.time() + 600
  while not tf.train.latest_checkpoint(str(run_dir / "checkpoints")):
    assert process.poll() is None and time.time() < deadline, process.stdout.read()[-3000:]
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  output = process.communicate()[0]
  assert not (run_dir / "DONE").exists()
  interrupted = int(tf.train.latest_checkpoint(str(run_dir / "checkpoints")).split("-")[-1])
  assert process.returncode == 4 and "Traceback" not in output, output[-3000:]
  stopped = [line for line in output.splitlines() if line.startswith("preempted: ")]
  assert stopped == [f"preempted: stopped on SIGTERM at step {interrupted} of 40; "
                     f"checkpoint saved in {run_dir}: run the same command to resume "
                     "from it"], output[-3000:]
  code, output = _run(RUN, *args)
  assert code == 0, output[-4000:]
  assert "stage pretrain: up to date; skipping" in output
  steps = [json.loads(line)["step"] for line in open(run_dir / "history.jsonl")]
  assert steps == list(range(2, 42, 2))
  assert interrupted < 40 and (run_dir / "DONE").exists()


def test_a_busy_workdir_is_refused_and_a_killed_runs_lock_taken_over(embedded_dir, tmp_path):
  workdir = tmp_path / "work"
  args = [f"--workdir={workdir}", f"--data_dir={embedded_dir}", *TINY, "--analyses=none",
          "--variants=scratch", "--seeds=0"]
  first = _run(RUN, *args, "--pretrain_steps=100000", wait=False)
  try:
    history = workdir / "pretrain" / "history.jsonl"
    deadline = time.time() + 600
    while not (history.exists() and history.read_text().strip()):
      assert first.poll() is None and time.time() < deadline, first.stdout.read()[-3000:]
      time.sleep(0.05)
    code, output = _run(RUN, *args, "--pretrain_steps=100000")
    assert code == 2, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    assert errors[0].startswith(f"error: --workdir={workdir} is in use by another run (host "
                                ) and f", process {first.pid}, started " in errors[0], errors
    assert first.poll() is None
  finally:
    first.kill()
    first.communicate()
  code, output = _run(RUN, *args, "--force", "--pretrain_steps=4")
  assert code == 0, output[-3000:]
  taken = [line for line in output.splitlines() if "taking over the lock" in line]
  assert len(taken) == 1 and f", process {first.pid}, started " in taken[0], output[-3000:]
  assert taken[0].endswith("its process is gone"), taken
  assert not (workdir / "LOCK").exists()


def _metrics(workdir, analysis, model):
  return results.read(str(workdir), analysis)["payload"]["models"][model]["metrics"]


def test_analysis_of_a_checkpoint_and_of_its_saved_model_agree(finished, embedded_dir,
                                                               tmp_path):
  """The same weights give the same numbers, through the pipeline or a .keras file."""
  workdir, _ = finished
  code, output = _run(ANALYZE, f"--model_path={workdir}", "--checkpoint=scratch",
                      "--analyses=alignment", f"--workdir={tmp_path / 'checkpoint'}")
  assert code == 0, output[-3000:]
  pipeline = _metrics(workdir, "alignment", "scratch")
  assert _metrics(tmp_path / "checkpoint", "alignment", "model") == pipeline
  # The same weights as a Keras file, analysed with the same data flags.
  experiment = experiments.get("transfer")
  cfg = type("Cfg", (), json.loads((workdir / "flags.json").read_text()))
  cfg.workdir = str(workdir)
  from tfrandlabels.pipeline.context import Context  # pylint: disable=import-outside-toplevel
  model = experiment.models(cfg)["scratch"].load(Context(cfg, tf.distribute.get_strategy()))
  model.save(tmp_path / "scratch.keras")
  code, output = _run(ANALYZE, f"--model_path={tmp_path / 'scratch.keras'}",
                      "--dataset=embedded", f"--data_dir={embedded_dir}", "--split=test[:64]",
                      "--batch_size=32", "--analyses=alignment",
                      f"--workdir={tmp_path / 'keras'}")
  assert code == 0, output[-3000:]
  keras_metrics = _metrics(tmp_path / "keras", "alignment", "model")
  for key in ("misalignment", "misalignment_random_basis", "transfer_function"):
    np.testing.assert_allclose(keras_metrics[key], pipeline[key], rtol=1e-5)


def test_analyze_runs_on_a_users_own_model(embedded_dir, tmp_path):
  """A model built and saved outside the pipeline, checked against numpy."""
  keras.utils.set_random_seed(1)
  model = keras.Sequential([keras.Input((32, 32, 3)),
                            keras.layers.Conv2D(6, 5, strides=2, activation="relu"),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
  model.save(tmp_path / "mine.keras")
  code, output = _run(ANALYZE, f"--model_path={tmp_path / 'mine.keras'}",
                      "--dataset=embedded", f"--data_dir={embedded_dir}", "--split=test[:40]",
                      "--analyses=alignment,attribution", "--attribution_images=2",
                      "--attribution_samples=2", f"--workdir={tmp_path / 'out'}")
  assert code == 0, output[-3000:]
  assert f"report: {tmp_path / 'out'}/report.html" in output
  images = np.stack([e["image"] for e in data.load("embedded", "test[:40]", embedded_dir)
                     .as_numpy_iterator()]).astype(np.float64) / 255.0
  patches = np.stack([images[:, r:r + 5, c:c + 5, :].reshape(len(images), -1)
                      for r in range(0, 28, 2) for c in range(0, 28, 2)], 1).reshape(-1, 75)
  sigma_x = np.cov(patches, rowvar=False, bias=True)
  kernel = model.layers[0].kernel.numpy()
  expected = alignment.misalignment(sigma_x, alignment.filter_covariance(kernel))
  metrics = _metrics(tmp_path / "out", "alignment", "model")
  assert metrics["misalignment"] == pytest.approx(expected, rel=1e-3)
  assert len(_metrics(tmp_path / "out", "attribution", "model")["predictions"]) == 2


@pytest.mark.parametrize("args, message", [
    (["--model_path=/nonexistent.keras"], "--model_path=/nonexistent.keras: no such file"),
    (["--analyses=nope"], "--analyses=nope is not one of"),
    (["--split=test[:0]"], "--split=test[:0] selects 0 examples"),
])
def test_analyze_refuses_bad_input_in_one_line(embedded_dir, tmp_path, capsys, args,
                                               message):
  model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                            keras.layers.Dense(10)])
  model.save(tmp_path / "m.keras")
  flags.FLAGS.unparse_flags()
  with pytest.raises(SystemExit) as exit_info:
    analyze_main.run([ANALYZE, f"--model_path={tmp_path / 'm.keras'}",
                      f"--data_dir={embedded_dir}", f"--workdir={tmp_path / 'out'}", *args])
  output = capsys.readouterr()
  errors = [line for line in output.err.splitlines() if line.startswith("error:")]
  assert exit_info.value.code == 2 and len(errors) == 1, output
  assert message in errors[0] and "Traceback" not in output.err + output.out
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flagfile, name", [("quick.cfg", "transfer"), ("cifar.cfg", "transfer"),
                                            ("geometry_cifar.cfg", "transfer"),
                                            ("imagenet.cfg", "transfer"),
                                            ("depth_simple_cnn.cfg", "transfer"),
                                            ("depth_vgg16.cfg", "transfer"),
                                            ("downstream_random.cfg", "transfer"),
                                            ("gaussian.cfg", "gaussian")])
def test_configs_parse(flagfile, name):
  experiment, cfg = parse_flagfile(flagfile)
  assert experiment.name == name and cfg.batch_size > 0


def test_depth_variants_alone_run_at_every_depth():
  cfg = parse_flagfile("quick.cfg", "--transfer_layers=2,1")[1]
  assert transfer_experiment.finetune_runs(cfg) == [
      ("scratch", 0), ("pretrained", 1), ("pretrained", 2), ("no_rescaling", 1),
      ("covariance", 1)]
  only = parse_flagfile("quick.cfg", "--variants=scratch,no_rescaling")[1]
  assert transfer_experiment.finetune_runs(only) == [("scratch", 0), ("no_rescaling", 1)]
  every = parse_flagfile("quick.cfg", "--transfer_layers=1,2", "--depth_variants=")[1]
  assert len(transfer_experiment.finetune_runs(every)) == 1 + 3 * 2
  for flagfile in ("depth_simple_cnn.cfg", "downstream_random.cfg"):
    assert len(transfer_experiment.finetune_runs(parse_flagfile(flagfile)[1])) == 1 + 2 * 2


def test_geometry_cifar_trains_as_cifar_cfg():
  """So its header's promise holds: on cifar.cfg's workdir it trains nothing."""
  cifar = vars(parse_flagfile("cifar.cfg")[1])
  geometry = vars(parse_flagfile("geometry_cifar.cfg")[1])
  assert {n for n in cifar if cifar[n] != geometry[n]} == {"workdir", "analyses",
                                                            "volume_resolution"}


ANALYSES_OF_TRANSFER = {"alignment": {"random_labels", "scratch"},
                        "attribution": {"scratch", "pretrained_k1"}}


def test_cifar_configs_run_two_steps_per_stage_on_mock_data(tmp_path):
  """geometry_cifar.cfg on mock CIFAR-10, two steps per stage. It is cifar.cfg with more
  analyses (test_geometry_cifar_trains_as_cifar_cfg), so this runs every stage and
  analysis of cifar.cfg too."""
  data_dir, workdir = str(tmp_path / "data"), f"ram://{tmp_path}/work"
  write_tfds_metadata("cifar10", data_dir, {"train": 50000, "test": 10000})
  experiment, cfg = parse_flagfile(
      "geometry_cifar.cfg", f"--workdir={workdir}", f"--data_dir={data_dir}",
      "--pretrain_steps=2", "--finetune_steps=2", "--seeds=0", "--batch_size=16",
      "--attribution_images=2", "--attribution_samples=2", "--volume_planes=1",
      "--volume_resolution=4")
  with tfds.testing.mock_data(num_examples=64, data_dir=data_dir):
    report = runner.run(experiment, cfg)
  payload = results.read(workdir, "transfer")["payload"]
  assert all(v["curve"]["step"] == [2] for v in payload["variants"].values())
  assert tf.io.gfile.exists(report)
  analyses = {**ANALYSES_OF_TRANSFER,
              "volume_element": {"random_labels", "scratch", "pretrained_k1"}}
  for name, models in analyses.items():
    assert set(results.read(workdir, name)["payload"]["models"]) == models, name
