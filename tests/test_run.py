"""The pipeline end to end: outputs, skipping, resume, configs, and refused input."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import write_tfds_metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(REPO, "pipelines", "run.py")
TINY = ["--upstream_split=train[:128]", "--downstream_split=train[128:256]",
        "--test_split=test[:64]", "--pretrain_steps=4", "--finetune_steps=4",
        "--batch_size=32", "--seeds=0,1", "--log_every=2", "--steps_per_loop=2",
        "--checkpoint_every=2", "--attribution_images=2", "--target_accuracy=0.2"]
RESULT_KEYS = {"config", "target_accuracy", "pretrain", "variants", "alignment"}
VARIANT_KEYS = {"variant", "transfer_layers", "seeds", "curve", "steps_to_target",
                "speedup_over_scratch", "final_test_accuracy"}


def _run(*flags, wait=True):
  process = subprocess.Popen(
      [sys.executable, RUN, *flags], cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  if not wait:
    return process
  output = process.communicate(timeout=900)[0]
  return process.returncode, output


@pytest.fixture(scope="module")
def finished(embedded_dir, tmp_path_factory):
  """One tiny end-to-end run of the default configuration."""
  workdir = tmp_path_factory.mktemp("run") / "work"
  code, output = _run(f"--workdir={workdir}", f"--data_dir={embedded_dir}", *TINY)
  assert code == 0, output[-4000:]
  return workdir, output


def test_end_to_end_writes_results_and_report(finished):
  workdir, output = finished
  assert f"report: {workdir}/report.html" in output
  results = json.loads((workdir / "results.json").read_text())
  assert RESULT_KEYS <= set(results)
  assert set(results["variants"]) == {"scratch", "pretrained_k1", "no_rescaling_k1",
                                      "covariance_k1"}
  for name, variant in results["variants"].items():
    assert VARIANT_KEYS <= set(variant), name
    assert variant["seeds"] == [0, 1]
    assert variant["curve"]["step"] == [2, 4]
    assert len(variant["final_test_accuracy"]["per_seed"]) == 2
  assert results["pretrain"]["realized_label_noise"] == pytest.approx(0.9, abs=0.1)
  alignment = results["alignment"]
  assert len(alignment["upstream"]["sigma"]) == 27 and alignment["upstream"]["step"] == [2, 4]
  assert alignment["downstream"]["step"] == [2, 4]
  assert len(alignment["upstream"]["transfer_function"][0]) == 27
  html = (workdir / "report.html").read_text()
  assert html.count("data:image/png;base64,") >= 5
  assert 'src="http' not in html
  for figure in ("learning_curves", "attribution", "transfer_function", "misalignment",
                 "eigenfilters"):
    assert (workdir / "figures" / f"{figure}.png").read_bytes()[:4] == b"\x89PNG", figure
  flags = json.loads((workdir / "flags.json").read_text())
  assert flags["pretrain_steps"] == 4 and flags["seeds"] == [0, 1]
  assert list((workdir / "pretrain" / "tensorboard").iterdir())


def test_second_run_trains_nothing(finished, embedded_dir):
  workdir, _ = finished
  histories = sorted(workdir.rglob("history.jsonl"))
  before = {p: p.stat().st_mtime_ns for p in histories}
  report_time = (workdir / "report.html").stat().st_mtime_ns
  code, output = _run(f"--workdir={workdir}", f"--data_dir={embedded_dir}", *TINY)
  assert code == 0, output[-4000:]
  assert {p: p.stat().st_mtime_ns for p in histories} == before
  assert (workdir / "report.html").stat().st_mtime_ns == report_time
  assert output.count("skipping") >= 1 + 4 * 2 + 2


@pytest.mark.parametrize("flags, message", [
    (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    (["--flagfile=missing.cfg"], "missing.cfg"),
    (["--transfer_layers=3"], "--transfer_layers=3 must be between 1 and 2"),
    (["--seeds="], "--seeds must be a non-empty comma list"),
    (["--downstream_split=train[100:300]"], "overlaps --upstream_split"),
    (["--pretrain_steps=5"], "holds a run with other flags (pretrain_steps)"),
    (["--model=transformer"], "--model"),
])
def test_bad_input_is_refused_without_damage(finished, embedded_dir, flags, message):
  workdir, _ = finished
  snapshot = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
  code, output = _run(f"--workdir={workdir}", f"--data_dir={embedded_dir}", *TINY, *flags)
  assert code != 0
  assert message in output, output[-2000:]
  assert "Traceback" not in output
  assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == snapshot


def test_interrupted_finetune_resumes(embedded_dir, tmp_path):
  workdir = tmp_path / "work"
  flags = [f"--workdir={workdir}", f"--data_dir={embedded_dir}", *TINY,
           "--finetune_steps=40", "--variants=scratch", "--seeds=0",
           "--stages=pretrain,finetune"]
  process = _run(*flags, wait=False)
  run_dir = workdir / "finetune" / "scratch" / "seed0"
  deadline = time.time() + 600
  while not tf.train.latest_checkpoint(str(run_dir / "checkpoints")):
    assert process.poll() is None and time.time() < deadline, process.stdout.read()[-3000:]
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (run_dir / "DONE").exists()
  interrupted = int(tf.train.latest_checkpoint(str(run_dir / "checkpoints")).split("-")[-1])
  code, output = _run(*flags)
  assert code == 0, output[-4000:]
  assert "pretrain: already done" in output
  steps = [json.loads(line)["step"] for line in open(run_dir / "history.jsonl")]
  assert steps == list(range(2, 42, 2))
  assert interrupted < 40 and (run_dir / "DONE").exists()


def _parse(flagfile, *extra):
  """Parses a flagfile with the pipeline's own flags and validators, in process."""
  sys.path.insert(0, os.path.join(REPO, "pipelines"))
  import run  # pylint: disable=import-outside-toplevel
  sys.path.pop(0)
  run.FLAGS.unparse_flags()
  if not getattr(run, "_validators_registered", False):
    run._register_validators()  # pylint: disable=protected-access
    run._validators_registered = True  # pylint: disable=protected-access
  run.FLAGS(["run.py", f"--flagfile={os.path.join(REPO, flagfile)}", *extra])
  return run


@pytest.mark.parametrize("flagfile", ["quick.cfg", "cifar.cfg", "imagenet.cfg"])
def test_configs_parse(flagfile):
  cfg = _parse(flagfile).settings()
  assert cfg.seeds and cfg.transfer_layers and cfg.pretrain_steps > 0


def test_cifar_config_runs_two_steps_per_stage_on_mock_data(tmp_path):
  data_dir = str(tmp_path / "data")
  write_tfds_metadata("cifar10", data_dir, {"train": 50000, "test": 10000})
  run = _parse("cifar.cfg", f"--workdir=ram://{tmp_path}/work", f"--data_dir={data_dir}",
               "--pretrain_steps=2", "--finetune_steps=2", "--seeds=0", "--batch_size=16",
               "--attribution_images=2")
  from tfrandlabels.pipeline import runner  # pylint: disable=import-outside-toplevel
  with tfds.testing.mock_data(num_examples=64, data_dir=data_dir):
    report = runner.run(run.settings())
  results = json.loads(tf.io.gfile.GFile(f"ram://{tmp_path}/work/results.json").read())
  assert results["config"]["dataset"] == "cifar10"
  assert all(v["curve"]["step"] == [2] for v in results["variants"].values())
  assert tf.io.gfile.exists(report)
