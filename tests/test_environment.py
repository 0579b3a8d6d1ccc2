"""A hostile environment: a read-only workdir, a full disk, an unreachable bucket, a bad
TF_CONFIG. Each is one line and an exit code, never a traceback, and loses nothing.

The disk cases mount a small tmpfs (root only; skipped otherwise), so the operating
system itself refuses the writes.
"""
import contextlib
import json
import os
import subprocess

from absl import flags
import pytest

from conftest import TINY
from tfrandlabels import errors
from tfrandlabels.pipeline import cli
from tfrandlabels.pipeline import run_main
from tfrandlabels.training import strategy as strategy_lib

RUN = os.path.join(run_main.REPO, "pipelines", "run.py")
ARGS = [*TINY, "--variants=scratch", "--seeds=0", "--analyses=none"]


def _run(workdir, embedded_dir, capsys, *extra):
  """Runs the pipeline in process; returns (exit code, its `error:` lines, stderr)."""
  flags.FLAGS.unparse_flags()
  with pytest.raises(SystemExit) as exit_info:
    run_main.run([RUN, f"--workdir={workdir}", f"--data_dir={embedded_dir}", *ARGS, *extra])
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if line.startswith("error:")]
  return exit_info.value.code or 0, lines, err


@contextlib.contextmanager
def _tmpfs(path, size):
  path.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                    capture_output=True, check=False).returncode:
    pytest.skip("needs root to mount a tmpfs")
  try:
    yield path
  finally:
    subprocess.run(["umount", "--lazy", str(path)], check=True)  # TensorBoard keeps a file open.


def _remount(path, options):
  subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def _files(folder):
  return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_disk_stops_in_one_line_and_the_same_command_resumes(embedded_dir, tmp_path,
                                                                     capsys):
  """Two 1.8 MB checkpoints do not fit in 2 MB: the run stops, keeping what finished."""
  with _tmpfs(tmp_path / "disk", "2m") as disk:
    code, lines, err = _run(disk / "work", embedded_dir, capsys)
    assert code == cli.STORAGE_FAILED and "Traceback" not in err, err[-3000:]
    assert len(lines) == 1 and "No space left on device" in lines[0], lines
    assert not [p for p in (disk / "work").rglob("*") if ".tmp-" in p.name]
    assert not (disk / "work" / "LOCK").exists()
    _remount(disk, "size=64m")
    assert _run(disk / "work", embedded_dir, capsys)[0] == 0
    assert (disk / "work" / "results" / "transfer.json").exists()


def test_a_read_only_workdir_is_one_line_and_left_as_it_was(embedded_dir, tmp_path, capsys):
  with _tmpfs(tmp_path / "disk", "16m") as disk:
    (disk / "work").mkdir()
    (disk / "work" / "notes.txt").write_text("the user's own file")
    before = _files(disk)
    _remount(disk, "ro")
    code, lines, err = _run(disk / "work", embedded_dir, capsys)
    assert code == cli.STORAGE_FAILED and "Traceback" not in err, err[-3000:]
    assert len(lines) == 1 and "Read-only file system" in lines[0], lines
    assert _files(disk) == before


def test_an_unreachable_bucket_is_one_line(embedded_dir, capsys):
  """This machine reaches no Google Cloud Storage; the line names the path."""
  workdir = "gs://tfrandlabels-test-no-such-bucket/work"
  code, lines, err = _run(workdir, embedded_dir, capsys)
  assert code in (cli.STORAGE_FAILED, cli.USAGE_ERROR) and "Traceback" not in err, err[-3000:]
  assert len(lines) == 1 and "gs://tfrandlabels-test-no-such-bucket" in lines[0], lines


@pytest.mark.parametrize("tf_config, message", [
    (None, "TF_CONFIG is not set"),
    ("{'cluster': ", "TF_CONFIG is not valid JSON"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), 'TF_CONFIG needs "cluster"'),
    (json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}),
     'TF_CONFIG "task" {\'type\': \'worker\', \'index\': 2} is not a task of its cluster '
     "(worker: 2)"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}),
     "is not a task of its cluster (worker: 1)"),
])
def test_a_bad_tf_config_is_named(tf_config, message):
  with pytest.raises(ValueError) as error:
    strategy_lib.check_tf_config(tf_config)
  assert message in str(error.value)


def test_a_good_tf_config_passes():
  strategy_lib.check_tf_config(json.dumps(
      {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]},
       "task": {"type": "worker", "index": 1}}))


def test_a_bad_tf_config_stops_the_command_in_one_line(embedded_dir, tmp_path, capsys,
                                                       monkeypatch):
  monkeypatch.setenv("TF_CONFIG", "not json")
  code, lines, err = _run(tmp_path / "work", embedded_dir, capsys,
                          "--strategy=multi_worker_mirrored")
  assert code == cli.USAGE_ERROR and "Traceback" not in err
  assert len(lines) == 1 and "TF_CONFIG is not valid JSON" in lines[0], lines
  assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("text, storage", [
    ("/w/x; No space left on device", True),
    ("/w; Read-only file system", True),
    ("Error executing an HTTP request: libcurl code 6\n\t when reading gs://b/x", True),
    ("OOM when allocating tensor with shape[1000000]", False),
    ("Attempting to use uninitialized value", False),
])
def test_storage_failures_are_told_from_bugs(text, storage):
  assert (errors.storage_failure(RuntimeError(text)) is not None) == storage
  if storage:
    assert "\n" not in errors.storage_failure(RuntimeError(text))


def test_a_long_storage_failure_keeps_its_cause_within_the_limit():
  path = "gs://bucket/" + "deep/" * 100 + "ckpt-1.tmp"
  line = errors.storage_failure(RuntimeError(f"SaveV2 failed\n\t{path}; No space left on "
                                             "device [Op:SaveV2]"))
  assert len(line) <= 300 and line.startswith("SaveV2 failed gs://bucket/deep/")
  assert line.endswith(" ... No space left on device [Op:SaveV2]")
  assert errors.storage_failure(RuntimeError("/w; No space left on device")) == (
      "/w; No space left on device")
