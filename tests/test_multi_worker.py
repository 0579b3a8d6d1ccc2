"""Strategies from the command line: two workers on localhost run `pipelines/run.py` as
users do (the same command on each, TF_CONFIG naming the cluster); the strategy, a TPU's
included, is created before any other TensorFlow work."""
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tfrandlabels.pipeline import results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(REPO, "pipelines", "run.py")
TINY = ["--strategy=multi_worker_mirrored", "--upstream_split=train[:128]",
        "--downstream_split=train[128:256]", "--test_split=test[:64]",
        "--pretrain_steps=4", "--finetune_steps=4", "--batch_size=32", "--seeds=0",
        "--variants=scratch,pretrained", "--log_every=2", "--steps_per_loop=2",
        "--checkpoint_every=2", "--analyses=alignment", "--target_accuracy=0.2",
        "--model_options=filters=8", "--transfer_layers=1"]
DIGEST = re.compile(r"(\S+): trained to step (\d+); weights digest (\w+)")


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _start_workers(workdir, data_dir, *args):
  """Starts the command on two workers of one cluster; returns their processes."""
  cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
  processes = []
  for index in range(2):
    tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
    processes.append(subprocess.Popen(
        [sys.executable, RUN, f"--workdir={workdir}", f"--data_dir={data_dir}", *TINY, *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_CONFIG": json.dumps(tf_config)}))
  return processes


def _run_workers(workdir, data_dir):
  """Runs the command on two workers; returns [(exit code, output)] per worker."""
  return [(p.wait(timeout=900), p.stdout.read()) for p in _start_workers(workdir, data_dir)]


def _digests(output):
  return {model_dir: (int(step), digest) for model_dir, step, digest in DIGEST.findall(output)}


@pytest.fixture(scope="module")
def two_runs(embedded_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("multi_worker") / "work"
  scratch = os.path.join(tempfile.gettempdir(), "tfrandlabels-worker1-*")
  before = set(glob.glob(scratch))
  first = _run_workers(workdir, embedded_dir)
  files = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
  left_in_tmp = set(glob.glob(scratch)) - before
  second = _run_workers(workdir, embedded_dir)
  return workdir, first, (files, left_in_tmp), second


def test_both_workers_finish_and_agree(two_runs):
  workdir, first, _, _ = two_runs
  for code, output in first:
    assert code == 0, output[-4000:]
  chief, other = (_digests(output) for _, output in first)
  # Pretraining and both finetuning runs, each to its configured step, with the same
  # weights on both workers.
  assert sorted(chief) == sorted(os.path.join(workdir, d) for d in (
      "pretrain", "finetune/scratch/seed0", "finetune/pretrained_k1/seed0"))
  assert all(step == 4 for step, _ in chief.values())
  assert chief == other
  printed = [[l for l in output.splitlines() if l.startswith("report: ")] for _, output in first]
  assert printed == [[f"report: {workdir}/report.html"], []]


def test_the_chief_alone_writes_a_consistent_workdir(two_runs):
  workdir, _, (files, left_in_tmp), _ = two_runs
  # The other worker saved its share of each checkpoint to a local temporary folder
  # (never into the workdir) and deleted it.
  assert not [f for f in files if "worker" in f or re.search(r"(seed\d+|pretrain)/scratch", f)]
  assert not left_in_tmp
  payload = results.read(str(workdir), "transfer")["payload"]
  assert set(payload["variants"]) == {"scratch", "pretrained_k1"}
  for variant in payload["variants"].values():
    assert variant["curve"]["step"] == [2, 4]
  records = [json.loads((workdir / "stages" / f"{name}.json").read_text())
             for name in ("pretrain", "finetune", "analyze", "analysis/alignment", "report")]
  assert all(r["done"] for r in records)
  history = [json.loads(line) for line in open(workdir / "pretrain" / "history.jsonl")]
  assert [r["step"] for r in history] == [2, 4]
  # The chief's hook recorded the first layer's alignment under its name.
  assert all("alignment/transfer_function" in r for r in history)


def test_rerun_trains_nothing_more(two_runs):
  workdir, _, _, second = two_runs
  for code, output in second:
    assert code == 0, output[-4000:]
    assert "trained to step" not in output
  assert "stage pretrain: up to date; skipping" in second[0][1]


PROBE = """
import sys
from tensorflow.python.eager import context
from tfrandlabels.pipeline import run_main
from tfrandlabels.training import strategy as strategy_lib

def probe(name, tpu):
  print("runtime initialized before the strategy:", context.context()._initialized)
  sys.exit(0)

strategy_lib.make_strategy = probe
run_main.run(sys.argv)
"""


@pytest.mark.parametrize("args", [["--strategy=multi_worker_mirrored"], ["--tpu=local"]])
def test_the_strategy_comes_before_any_tensorflow_work(embedded_dir, tmp_path, args):
  """Collectives and a TPU connection can only be set up before the runtime starts."""
  output = subprocess.run(
      [sys.executable, "-c", PROBE, f"--workdir={tmp_path / 'work'}",
       f"--data_dir={embedded_dir}", *args], cwd=REPO, capture_output=True, text=True,
      check=True).stdout
  assert "runtime initialized before the strategy: False" in output


def test_no_tpu_here_is_one_line_and_writes_nothing(embedded_dir, tmp_path):
  """`--tpu=local` goes through the resolver and TPU initialization, which finds none."""
  process = subprocess.run(
      [sys.executable, RUN, "--tpu=local", f"--workdir={tmp_path / 'work'}",
       f"--data_dir={embedded_dir}"], cwd=REPO, capture_output=True, text=True)
  assert process.returncode == 2, process.stderr[-3000:]
  errors = [l for l in process.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "--tpu=local" in errors[0] and "could not reach the TPU" in errors[0]
  assert "Traceback" not in process.stderr
  assert not (tmp_path / "work").exists()


def test_a_dead_worker_stops_the_other_with_one_line(embedded_dir, tmp_path):
  workdir = tmp_path / "work"
  chief, other = _start_workers(workdir, embedded_dir, "--pretrain_steps=100000")
  history = workdir / "pretrain" / "history.jsonl"
  deadline = time.time() + 300
  while not (history.exists() and history.read_text()):  # Training has started.
    assert chief.poll() is None and time.time() < deadline, chief.stdout.read()[-3000:]
    time.sleep(0.2)
  other.send_signal(signal.SIGKILL)
  other.wait()
  killed = time.time()
  output = chief.communicate(timeout=120)[0]
  assert chief.returncode == 3, output[-3000:]
  assert time.time() - killed < 60
  errors = [l for l in output.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "lost contact with another worker" in errors[0]
  assert "start the same command on every worker" in errors[0]
  assert "Traceback" not in output


def test_a_preempted_worker_stops_both_at_one_step_and_the_rerun_resumes(embedded_dir,
                                                                        tmp_path):
  workdir = tmp_path / "work"
  args = ("--pretrain_steps=40", "--stages=pretrain")
  chief, other = _start_workers(workdir, embedded_dir, *args)
  history = workdir / "pretrain" / "history.jsonl"
  deadline = time.time() + 300
  while not (history.exists() and history.read_text()):  # Training has started.
    assert chief.poll() is None and time.time() < deadline, chief.stdout.read()[-3000:]
    time.sleep(0.2)
  other.send_signal(signal.SIGTERM)  # Only one worker is told, as when one VM goes.
  outputs = [p.communicate(timeout=300)[0] for p in (chief, other)]
  stopped = []
  for process, output in zip((other, chief), outputs[::-1]):
    assert process.returncode == 4 and "Traceback" not in output, output[-3000:]
    lines = [l for l in output.splitlines() if l.startswith("preempted: ")]
    assert len(lines) == 1, output[-3000:]
    stopped.append(int(re.search(r"at step (\d+) of 40", lines[0]).group(1)))
  assert stopped[0] == stopped[1] < 40
  rerun = [(p.wait(timeout=900), p.stdout.read())
           for p in _start_workers(workdir, embedded_dir, *args)]
  for code, output in rerun:
    assert code == 0, output[-4000:]
  chief_digests, other_digests = (_digests(output) for _, output in rerun)
  assert chief_digests == other_digests
  assert chief_digests[os.path.join(workdir, "pretrain")][0] == 40
  steps = [json.loads(line)["step"] for line in open(history)]
  assert steps == list(range(2, 42, 2))
