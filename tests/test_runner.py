"""The runner's plan: what it runs, skips, redoes and refuses, on a cheap fake experiment."""
import json
import os
import types

import pytest

from tfrandlabels.errors import ConfigError
from tfrandlabels.experiments import registry
from tfrandlabels.pipeline import artifacts
from tfrandlabels.pipeline import runner
from tfrandlabels.pipeline.stage import Stage
from tfrandlabels.training import divergence
from tfrandlabels.training.trainer import TrainingDiverged


def _write(name):
  def run(ctx):
    calls.append(name)
    with open(ctx.path(f"{name}.txt"), "w") as f:
      f.write(json.dumps({n: getattr(ctx.cfg, n) for n in ("a", "b")}))
  return run


calls = []
FAKE = registry.Experiment(
    name="fake", title="Fake", flags=("a", "b"), check=lambda cfg: None,
    sections=lambda ctx, envelope: [],
    stages=lambda cfg: [
        Stage("train", "train", _write("train"), reads=("a",), outputs=("train.txt",),
              trains=True),
        Stage("summary", "summary", _write("summary"), reads=("b",), after=("train",),
              outputs=("summary.txt",))])


def _cfg(workdir, **overrides):
  values = dict(experiment="fake", workdir=str(workdir), stages=[], analyses=[], force=False,
                strategy="default", tpu=None, deterministic=False, data_dir=None, a=1, b=1)
  return types.SimpleNamespace(**{**values, **overrides})


def _run(workdir, **overrides):
  calls.clear()
  runner.run(FAKE, _cfg(workdir, **overrides))
  return list(calls)


def _files(workdir):
  return {p: open(os.path.join(d, p), "rb").read() for d, _, names in os.walk(workdir)
          for p in names}


def test_runs_then_skips(tmp_path):
  assert _run(tmp_path) == ["train", "summary"]
  assert (tmp_path / "report.html").exists()
  assert _run(tmp_path) == []


def test_a_changed_cheap_setting_redoes_that_stage_only(tmp_path):
  _run(tmp_path)
  assert _run(tmp_path, b=2) == ["summary"]
  assert json.loads((tmp_path / "summary.txt").read_text())["b"] == 2


def test_a_changed_training_setting_is_refused_without_force(tmp_path):
  _run(tmp_path)
  before = _files(tmp_path)
  with pytest.raises(ConfigError, match=r"holds stage train run with other settings \(a\)"):
    _run(tmp_path, a=2)
  assert _files(tmp_path) == before
  # --force redoes it, and with it everything that read its output.
  assert _run(tmp_path, a=2, force=True) == ["train", "summary"]


def test_report_alone_refuses_outputs_made_with_other_settings(tmp_path):
  _run(tmp_path)
  before = _files(tmp_path)
  with pytest.raises(ConfigError, match="needs the output of train"):
    _run(tmp_path, a=2, force=True, stages=["report"])
  assert _files(tmp_path) == before  # flags.json included.


def test_a_stage_redone_alone_makes_its_consumers_stale(tmp_path):
  _run(tmp_path)
  assert _run(tmp_path, force=True, stages=["train"]) == ["train"]
  with pytest.raises(ConfigError, match="needs the output of summary"):
    _run(tmp_path, stages=["report"])
  assert _run(tmp_path) == ["summary"]


def test_a_record_without_outputs_does_not_block_new_settings(tmp_path):
  """A run that stopped before its stage wrote anything leaves no claim on the workdir."""
  os.makedirs(tmp_path / "stages")
  (tmp_path / "stages" / "train.json").write_text(json.dumps(
      {"settings": {"a": 1}, "inputs": {}, "id": "x", "done": False}))
  assert _run(tmp_path, a=2) == ["train", "summary"]


def test_unknown_stage_is_refused(tmp_path):
  with pytest.raises(ConfigError, match="'pretrain' is not a stage of experiment fake; "
                                        "choose from train, summary, report"):
    _run(tmp_path, stages=["pretrain"])
  assert not tmp_path.joinpath("flags.json").exists()


def test_cache_is_keyed_by_what_it_depends_on(tmp_path):
  computed = []

  def compute(value):
    computed.append(value)
    return {"value": value}

  folder = str(tmp_path)
  assert artifacts.cached(folder, "stats", {"split": "a"}, lambda: compute(1)) == {"value": 1}
  assert artifacts.cached(folder, "stats", {"split": "a"}, lambda: compute(2)) == {"value": 1}
  assert artifacts.cached(folder, "stats", {"split": "b"}, lambda: compute(3)) == {"value": 3}
  assert computed == [1, 3]


def test_standardization_moments_follow_the_split(embedded_dir, tmp_path):
  """A new --upstream_split gets its own moments (and Sigma_x), never the old ones."""
  from tfrandlabels.experiments import common  # pylint: disable=import-outside-toplevel
  from tfrandlabels.pipeline.context import Context  # pylint: disable=import-outside-toplevel
  cfg = types.SimpleNamespace(workdir=str(tmp_path), dataset="embedded",
                              data_dir=embedded_dir, image_size=None)
  ctx = Context(cfg, strategy=None)
  first = common.moments(ctx, "train[:100]")
  second = common.moments(ctx, "train[3000:3100]")
  assert first != second
  assert common.moments(ctx, "train[:100]") == first
  assert len(os.listdir(tmp_path / "cache")) == 2


def test_outputs_without_a_record_are_not_trusted(tmp_path):
  (tmp_path / "train.txt").write_text("made by someone else")
  with pytest.raises(ConfigError, match="holds outputs of stage train without a readable record"):
    _run(tmp_path)
  assert _run(tmp_path, force=True) == ["train", "summary"]


def _diverging(ctx):
  """A training stage whose run diverges at rate >= 1, as the trainer records it."""
  calls.append("train")
  run = ctx.path("runs", "seed0")
  if divergence.check_continuation(run, ctx.cfg.learning_rate) is None and (
      ctx.cfg.learning_rate >= 1):
    os.makedirs(run, exist_ok=True)
    divergence.record(run, {"step": 7, "loss": "nan", "learning_rate": ctx.cfg.learning_rate,
                            "effective_learning_rate": ctx.cfg.learning_rate,
                            "checkpoint_step": 5})
    raise TrainingDiverged("loss is nan at step 7", None)
  if divergence.pending(run):
    divergence.mark_continued(run, ctx.cfg.learning_rate, 5)


DIVERGING = registry.Experiment(
    name="diverging", title="Diverging", flags=("learning_rate", "b"), check=lambda cfg: None,
    sections=lambda ctx, envelope: [],
    stages=lambda cfg: [
        Stage("pre", "pre", _write("pre"), reads=("learning_rate", "a"),
              outputs=("pre.txt",), trains=True),
        Stage("train", "train", _diverging, reads=("learning_rate", "b"), after=("pre",),
              outputs=("runs",), trains=True)])


def test_a_diverged_stage_continues_at_a_lower_rate_only(tmp_path):
  def run(**overrides):
    calls.clear()
    runner.run(DIVERGING, _cfg(tmp_path, experiment="diverging", **{"learning_rate": 2.0,
                                                                    **overrides}))
    return list(calls)

  with pytest.raises(TrainingDiverged):
    assert run() == ["pre", "train"]
  before = _files(tmp_path)
  # The same rate would diverge again; a higher one, or another changed setting, is
  # refused as changed settings, as before.
  with pytest.raises(ConfigError, match=r"^--learning_rate=2: .*seed0 diverged at step 7 "
                                        r"\(loss nan\) with learning rate 2; rerun with a lower "
                                        r"learning rate to continue from its checkpoint at step 5"):
    run()
  for overrides in ({"learning_rate": 3.0}, {"learning_rate": 0.5, "b": 2}):
    with pytest.raises(ConfigError, match=r"holds stage (pre|train) run with other settings"):
      run(**overrides)
  assert _files(tmp_path) == before
  # The diverged stage continues; the finished stage before it, which read the same
  # rate, is kept, and its record keeps the rate it ran at.
  assert run(learning_rate=0.5) == ["train"]
  record = json.loads((tmp_path / "stages" / "train.json").read_text())
  assert record["done"] and record["settings"]["learning_rate"] == 0.5
  pre = json.loads((tmp_path / "stages" / "pre.json").read_text())
  assert pre["settings"]["learning_rate"] == 2.0
  assert pre["later_settings"] == {"learning_rate": 0.5}
  assert json.loads((tmp_path / "pre.txt").read_text())["a"] == 1
  event, = divergence.events(str(tmp_path / "runs" / "seed0"))
  assert event["continued_learning_rate"] == 0.5
  assert run(learning_rate=0.5) == []
  with pytest.raises(ConfigError, match=r"holds stage pre run with other settings "
                                        r"\(learning_rate\)"):
    run(learning_rate=0.1)
