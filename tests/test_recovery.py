"""Recovery: killed runs and damaged artifacts give the results of an undamaged run.

* Kill at any point: the command is killed (SIGKILL) when its log shows a given event,
  started again, killed at the next event, ..., then left to finish; in --deterministic
  mode its results equal those of one uninterrupted run, apart from timing fields.
* Damage: unit tests build damaged files by hand; the pipeline tests damage a copy of a
  finished run, rerun the command in process, and compare the results with the
  undamaged run's, or check the one-line refusal and that nothing was written.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY
from tfrandlabels import io
from tfrandlabels.pipeline import artifacts
from tfrandlabels.pipeline import run_main
from tfrandlabels.training import checkpoints

RUN = os.path.join(run_main.REPO, "pipelines", "run.py")


def _save_checkpoints(directory, steps):
  step = tf.Variable(0, dtype=tf.int64)
  checkpoint = tf.train.Checkpoint(w=tf.Variable(np.arange(1000, dtype=np.float32)), step=step)
  manager = tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=len(steps))
  for s in steps:
    step.assign(s)
    manager.save(checkpoint_number=s)
  return [str(directory / f"ckpt-{s}") for s in steps]


def _truncate(path, keep):
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:keep])


def test_read_jsonl_names_the_first_line_that_does_not_parse(tmp_path):
  path = tmp_path / "history.jsonl"
  path.write_text('{"step": 1}\n{"step": 2}\n{"st')
  with pytest.raises(io.DamagedFile, match=r"history.jsonl is damaged \(line 3 is not valid"):
    io.read_jsonl(str(path))
  (tmp_path / "r.json").write_text('{"a": [1, 2')
  with pytest.raises(io.DamagedFile, match="r.json is damaged .not valid JSON"):
    io.read_json(str(tmp_path / "r.json"))
  (tmp_path / "garbage.json").write_bytes(b"\xff\xfe\x00")  # Not even UTF-8.
  with pytest.raises(io.DamagedFile, match="garbage.json is damaged .not valid JSON"):
    io.read_json(str(tmp_path / "garbage.json"))


def test_checkpoint_problems(tmp_path):
  """Whole, truncated data, lost shard, truncated index; the state file is not used."""
  ten, twenty, thirty, forty = _save_checkpoints(tmp_path, [10, 20, 30, 40])
  (tmp_path / "checkpoint").write_text("garbage {{")
  assert checkpoints.newest_first(str(tmp_path)) == [forty, thirty, twenty, ten]
  assert checkpoints.problem(forty) is None
  _truncate(forty + ".data-00000-of-00001", -1)
  assert checkpoints.problem(forty).startswith("data")
  os.remove(thirty + ".data-00000-of-00001")
  assert "data shards missing" in checkpoints.problem(thirty)
  _truncate(twenty + ".index", 20)
  assert checkpoints.problem(twenty).startswith("index unreadable")
  assert checkpoints.problem(ten) is None


def _run_folder(folder, steps, done_step=None, history=True):
  _save_checkpoints(folder / "checkpoints", steps)
  if history:  # Logged up to where the run finished, whatever checkpoints are left.
    logged = sorted(set(steps) | ({done_step} if done_step else set()))
    (folder / "history.jsonl").write_text("".join(json.dumps({"step": s}) + "\n"
                                                  for s in logged))
  if done_step is not None:
    (folder / "DONE").write_text(json.dumps({"step": done_step}))


def test_damage_tells_what_resuming_recovers_from_what_needs_a_delete(tmp_path):
  whole = tmp_path / "whole"
  _run_folder(whole, [2, 4], done_step=4)
  assert artifacts.damage(str(whole)) == [] and artifacts.is_done(str(whole))

  cases = {}
  cases["checkpoint"] = tmp_path / "checkpoint"
  _run_folder(cases["checkpoint"], [2, 4], done_step=4)
  _truncate(str(cases["checkpoint"] / "checkpoints" / "ckpt-4.data-00000-of-00001"), 10)
  cases["final_missing"] = tmp_path / "final_missing"
  _run_folder(cases["final_missing"], [2], done_step=4)
  cases["marker"] = tmp_path / "marker"
  _run_folder(cases["marker"], [2, 4], done_step=4)
  (cases["marker"] / "DONE").write_text('{"step": ')
  cases["history"] = tmp_path / "history"
  _run_folder(cases["history"], [2, 4], done_step=4)
  _truncate(str(cases["history"] / "history.jsonl"), 16)
  cases["history_emptied"] = tmp_path / "history_emptied"
  _run_folder(cases["history_emptied"], [2, 4], done_step=4)
  (cases["history_emptied"] / "history.jsonl").write_text("")
  cases["history_cut_at_a_line_end"] = tmp_path / "history_cut_at_a_line_end"
  _run_folder(cases["history_cut_at_a_line_end"], [2, 4], done_step=4)
  (cases["history_cut_at_a_line_end"] / "history.jsonl").write_text('{"step": 2}\n')
  cases["no_history"] = tmp_path / "no_history"
  _run_folder(cases["no_history"], [2, 4], done_step=4, history=False)
  cases["no_whole_checkpoint"] = tmp_path / "no_whole_checkpoint"
  _run_folder(cases["no_whole_checkpoint"], [2])
  os.remove(cases["no_whole_checkpoint"] / "checkpoints" / "ckpt-2.index")
  (cases["no_whole_checkpoint"] / "checkpoints" / "ckpt-2.index").write_bytes(b"x")

  found = {name: artifacts.damage(str(folder)) for name, folder in cases.items()}
  assert all(found.values()) and not any(artifacts.is_done(str(f)) for f in cases.values())
  recoverable = {name for name, d in found.items() if all(x.delete is None for x in d)}
  assert recoverable == {"checkpoint", "final_missing", "marker"}
  for name in ("history", "history_emptied", "history_cut_at_a_line_end", "no_history",
               "no_whole_checkpoint"):
    assert [d.delete for d in found[name] if d.delete] == [str(cases[name])], found[name]
  assert found["history"][0].reason == "line 2 is not valid JSON"
  assert "step 4" in found["final_missing"][0].reason


def test_damage_finds_a_cut_results_file(tmp_path):
  (tmp_path / "results").mkdir()
  (tmp_path / "results" / "a.json").write_text('{"schema_version": 1, "payl')
  (tmp_path / "results" / "b.json").write_text("{}")
  found = artifacts.damage(str(tmp_path))
  assert [(d.path, d.delete) for d in found] == [(str(tmp_path / "results" / "a.json"), None)]


# --- the pipeline, in process ---------------------------------------------------------

ARGS = [*TINY, "--deterministic", "--variants=scratch,pretrained", "--seeds=0",
        "--finetune_steps=6"]


def _exit_code(workdir, embedded_dir):
  """Runs the command in this process (one TensorFlow start for every case)."""
  flags.FLAGS.unparse_flags()
  with pytest.raises(SystemExit) as exit_info:
    run_main.run([RUN, f"--workdir={workdir}", f"--data_dir={embedded_dir}", *ARGS])
  return exit_info.value.code or 0


def _untimed(value):
  """A results value without its timing and speed fields."""
  if isinstance(value, dict):
    return {k: _untimed(v) for k, v in value.items() if "second" not in k and "time" not in k}
  if isinstance(value, list):
    return [_untimed(v) for v in value]
  return value


def _results(workdir):
  """Every results/*.json of a workdir, without timing fields."""
  folder = os.path.join(workdir, "results")
  return {name: _untimed(io.read_json(os.path.join(folder, name)))
          for name in sorted(tf.io.gfile.listdir(folder))}


def _stamps(folder):
  return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in sorted(folder.rglob("*")) if p.is_file()}


def _kill_at(args, events):
  """Starts `run.py args` once per event and kills it (SIGKILL) as soon as its log shows
  that event, a (regex, n) pair: the n-th line matching regex; then runs it to the end."""
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  for pattern, n in events:
    process = subprocess.Popen([sys.executable, RUN, *args], cwd=run_main.REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, log = 0, []
    for line in process.stdout:
      log.append(line)
      seen += bool(re.search(pattern, line))
      if seen == n:
        process.send_signal(signal.SIGKILL)
        break
    process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL, (pattern, "".join(log)[-3000:])
  result = subprocess.run([sys.executable, RUN, *args], cwd=run_main.REPO, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:]


@pytest.fixture(scope="module")
def reference(embedded_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("damage") / "reference"
  assert _exit_code(workdir, embedded_dir) == 0
  return workdir


# Kill points in the order the stages run: between a logged step and its checkpoint
# (pretraining and finetuning), after a run's last step but before its DONE marker, after
# results are written but before the stage is recorded as done, and as an analysis starts
# after another finished. (Each point costs a process start, and a kill as a stage starts
# is the same whichever stage it is: the runner's.)
TRANSFER_KILLS = [("step 2: ", 1), ("step 4: ", 2), ("trained to step 6", 1),
                  ("analyze: wrote", 1), ("stage analysis/attribution: start", 1)]


def test_killed_at_any_point_the_transfer_run_ends_with_the_uninterrupted_results(
    reference, embedded_dir, tmp_path):
  workdir = tmp_path / "work"
  _kill_at([f"--workdir={workdir}", f"--data_dir={embedded_dir}", *ARGS], TRANSFER_KILLS)
  assert _results(workdir) == _results(reference)


def _small_run(name, tmp_path, embedded_dir, planted_dir):
  """Flags of a deterministic seconds-long run of experiment `name` (its flagfile first:
  a later --workdir overrides the flagfile's), and where to kill it: in the middle of
  training (a step logged, its checkpoint maybe not yet saved), and as a later run starts
  or after results are written but before their stage is recorded. (A kill as an
  analysis starts is the runner's, whatever the experiment: the transfer run's test.)"""
  loop = ["--deterministic", "--log_every=5", "--steps_per_loop=5", "--checkpoint_every=5"]
  if name == "gaussian":
    setting = tmp_path / "tiny.cfg"
    setting.write_text("--dim=4\n--variance_min=0.5\n--variance_max=2\n--widths=16,8\n"
                       "--samples=256\n")
    return ([f"--flagfile={run_main.REPO}/gaussian.cfg", f"--gaussian_settings={setting}",
             "--gaussian_steps=15", "--gaussian_seeds=0,1", "--batch_size=32", *loop],
            [("step 10: ", 1), ("seed 1 -> ", 1)])
  if name == "geometry_toy":
    return ([f"--flagfile={run_main.REPO}/geometry_toy.cfg", "--geometry_xor_steps=10",
             "--geometry_sinusoid_steps=10", "--geometry_deep_steps=10",
             "--volume_resolution=6", "--analyses=volume_element", *loop],
            [("step 5: ", 2), ("geometry_toy: sinusoid_deep -> ", 1)])
  return ([f"--flagfile={run_main.REPO}/shortcuts.cfg", f"--data_dir={planted_dir}",
           "--shortcuts_datasets=planted_high", "--shortcuts_steps=10",
           "--learning_order_images=32", "--dominant_frequencies_images=2",
           "--shortcut_test_shifts=noise:0.05", *loop],
          [("step 5: ", 1), ("analyze: wrote", 1)])


@pytest.mark.parametrize("name", ["gaussian", "geometry_toy", "frequency_shortcuts"])
def test_killed_in_training_and_analysis_every_experiment_ends_with_the_same_results(
    name, tmp_path, embedded_dir, planted_dir):
  args, kills = _small_run(name, tmp_path, embedded_dir, planted_dir)
  flags.FLAGS.unparse_flags()
  with pytest.raises(SystemExit) as exit_info:
    run_main.run([RUN, *args, f"--workdir={tmp_path / 'reference'}"])
  assert not exit_info.value.code
  _kill_at([*args, f"--workdir={tmp_path / 'work'}"], kills)
  assert _results(tmp_path / "work") == _results(tmp_path / "reference")


def _damaged_copy(reference, tmp_path):
  workdir = tmp_path / "work"
  shutil.copytree(reference, workdir)
  return workdir


RUN_DIR = os.path.join("finetune", "pretrained_k1", "seed0")


def _cut_newest_checkpoint(workdir):
  _truncate(str(workdir / RUN_DIR / "checkpoints" / "ckpt-6.data-00000-of-00001"), 100)


def _delete_final_checkpoint(workdir):
  for name in ("ckpt-6.index", "ckpt-6.data-00000-of-00001"):
    os.remove(workdir / RUN_DIR / "checkpoints" / name)


def _cut_results(workdir):
  _truncate(str(workdir / "results" / "transfer.json"), 50)


def _cut_pretrain_marker(workdir):
  _truncate(str(workdir / "pretrain" / "DONE"), 5)


@pytest.mark.parametrize("damage, warning", [
    (_cut_newest_checkpoint, "ckpt-6 is damaged (checkpoint: data"),
    (_delete_final_checkpoint, "the checkpoint of step 6, where the run finished, is missing"),
    (_cut_results, "transfer.json is damaged (not valid JSON"),
    (_cut_pretrain_marker, "pretrain/DONE is damaged (not valid JSON"),
])
def test_recoverable_damage_is_mended_to_the_undamaged_results(reference, embedded_dir,
                                                               tmp_path, caplog, damage,
                                                               warning):
  workdir = _damaged_copy(reference, tmp_path)
  damage(workdir)
  assert _exit_code(workdir, embedded_dir) == 0
  assert warning in caplog.text
  assert _results(workdir) == _results(reference)
  assert artifacts.damage(str(workdir)) == []


def _cut_history(workdir):
  _truncate(str(workdir / RUN_DIR / "history.jsonl"), 30)


def _cut_every_checkpoint(workdir):
  for name in tf.io.gfile.glob(str(workdir / RUN_DIR / "checkpoints" / "*.index")):
    _truncate(name, 10)


@pytest.mark.parametrize("damage, message", [
    (_cut_history, "history.jsonl is damaged (line 1 is not valid JSON); delete "),
    (_cut_every_checkpoint, "seed0 is damaged (no checkpoint is whole); delete "),
])
def test_damage_only_a_delete_mends_is_refused_in_one_line(reference, embedded_dir,
                                                           tmp_path, capsys, damage,
                                                           message):
  workdir = _damaged_copy(reference, tmp_path)
  damage(workdir)
  before = _stamps(workdir)
  code = _exit_code(workdir, embedded_dir)
  output = capsys.readouterr().err
  errors = [line for line in output.splitlines() if line.startswith("error:")]
  assert code == 2 and len(errors) == 1, output[-3000:]
  assert message in errors[0] and errors[0].endswith(
      f"{workdir / RUN_DIR} and rerun to train that run again"), errors
  assert "Traceback" not in output
  assert _stamps(workdir) == before
