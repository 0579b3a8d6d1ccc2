"""Runs an experiment's stages: plan everything, refuse before writing, then work.

Each stage keeps a record, workdir/stages/<name>.json: the settings it read, the
ids of the inputs it used, its own id, and whether it finished. Before anything is
written the runner compares every record with what the current flags ask for:

  * no record (or one whose outputs are all gone): the stage runs;
  * same settings and inputs, finished: skipped; unfinished: resumed;
  * other settings or a redone input: a training stage is refused unless --force
    (the message names what changed); any other stage is redone;
  * an unfinished training stage whose run diverged: resumed if its learning rates
    are the only change and each is lower (the run continues from its last good
    checkpoint), refused if nothing changed (it would diverge again); finished stages
    before it that read those rates are kept, their record amended ("later_settings");
  * a selected stage whose input stage is neither selected nor up to date: refused,
    naming the stage to add to --stages.

A redone stage gets a new id, so everything downstream of it is redone too: outputs
are never reused for inputs they were not made from.
"""
import contextlib
import os
import types
import uuid

from absl import logging
import tensorflow as tf

from tfrandlabels import io
from tfrandlabels.analyses import registry as analyses
from tfrandlabels.errors import ConfigError
from tfrandlabels.experiments import registry as experiments
from tfrandlabels.pipeline import artifacts
from tfrandlabels.pipeline import flags as flag_lib
from tfrandlabels.pipeline import lock
from tfrandlabels.pipeline import report
from tfrandlabels.pipeline import results
from tfrandlabels.pipeline.context import Context
from tfrandlabels.pipeline.stage import Stage
from tfrandlabels.training import divergence
from tfrandlabels.training import preemption
from tfrandlabels.training import precision
from tfrandlabels.training import strategy as strategy_lib

FLAGS_FILE = "flags.json"
RECORDS = "stages"


def _record_path(workdir, name):
  return os.path.join(workdir, RECORDS, f"{name}.json")


def _has_outputs(workdir, stage):
  return any(tf.io.gfile.exists(os.path.join(workdir, out)) for out in stage.outputs)


def _changes(record, wanted):
  """What differs between a stage's record and what the flags ask for. A setting the
  record lists under "later_settings" (a learning rate lowered for a divergence in a
  later stage, after this one finished) matches at that value too."""
  later = record.get("later_settings", {})
  names = set(record["settings"]) | set(wanted["settings"])
  changed = sorted(n for n in names if wanted["settings"].get(n) not in (
      record["settings"].get(n), later.get(n, record["settings"].get(n))))
  return changed + [f"stage {d} was redone" for d, i in wanted["inputs"].items()
                    if record["inputs"].get(d) != i]


def _read_record(workdir, stage):
  """A stage's record; a damaged one counts as none (its outputs then need --force if
  the stage trains, like outputs of an older release)."""
  try:
    return io.read_json(_record_path(workdir, stage.name))
  except io.DamagedFile as e:
    logging.warning("%s; treating stage %s as having no record", e, stage.name)
    return None


def _damage(workdir, stage):
  """Damage in a recorded stage's outputs; a missing first output counts as damage."""
  found = []
  if stage.outputs and not tf.io.gfile.exists(os.path.join(workdir, stage.outputs[0])):
    found.append(artifacts.Damage(os.path.join(workdir, stage.outputs[0]), "missing"))
  for output in stage.outputs:
    found += artifacts.damage(os.path.join(workdir, output))
  fatal = [d for d in found if d.delete]
  if fatal:
    raise ConfigError(f"{fatal[0].path} is damaged ({fatal[0].reason}); delete "
                      f"{fatal[0].delete} and rerun to train that run again")
  for d in found:
    logging.warning("stage %s: %s is damaged (%s); %s", stage.name, d.path, d.reason,
                    "resuming the stage from what is whole" if stage.trains else
                    "doing the stage again")
  return [f"{d.path} is damaged ({d.reason})" for d in found]


def _settings(cfg, stage):
  return {n: getattr(cfg, n) for n in stage.reads if n not in flag_lib.RUN_FLAGS}


def _lowered_rates(stages, selected, cfg):
  """The stages that continue diverged runs at lower rates, and those rates.

  A selected, unfinished training stage whose runs diverged (see `training.divergence`)
  continues from their last good checkpoints when the only changed settings are
  learning rates, each lowered. Its runs that finished before keep what they trained,
  and the events say so in each run's DONE marker; finished stages before it that read
  the same rates are kept (see `_changes`).

  Returns:
    (names of the continuing stages, {flag: lowered value}).

  Raises:
    ConfigError: such a stage is asked for with unchanged settings: it would diverge
      again.
  """
  continuing, lowered = set(), {}
  for stage in stages:
    record = _read_record(cfg.workdir, stage) if stage.trains and not cfg.force else None
    if stage.name not in selected or not record or record.get("done"):
      continue
    runs = [run for output in stage.outputs
            for run in artifacts.diverged_runs(os.path.join(cfg.workdir, output))]
    if not runs:
      continue
    wanted, old = _settings(cfg, stage), record["settings"]
    rates = [n for n in stage.reads if n.endswith("learning_rate")]
    changes = [n for n in wanted if wanted[n] != old.get(n)]
    if not changes:
      raise ConfigError(f"{', '.join(f'--{n}={getattr(cfg, n):g}' for n in rates)}: "
                        f"{divergence.refusal(runs[0], divergence.pending(runs[0]))}")
    if all(n in rates and wanted[n] < old.get(n, float("inf")) for n in changes):
      logging.warning("stage %s: %s diverged; continuing from the last good checkpoint with "
                      "%s (runs that finished before keep what they trained; runs not yet "
                      "started train at the new rate)", stage.name, ", ".join(runs),
                      ", ".join(f"{n} {old[n]:g} -> {wanted[n]:g}" for n in changes))
      continuing.add(stage.name)
      lowered.update({n: wanted[n] for n in changes})
  return continuing, lowered


def plan(stages, selected, cfg):
  """Decides, for every stage, 'skip', 'resume', 'run' or 'redo' (raises ConfigError).

  A recorded stage whose outputs are damaged (see `artifacts.damage`) is resumed if it
  trains (each run continues from its newest whole checkpoint) or redone if not; damage
  only deleting a run can mend is refused, naming what to delete.

  Returns:
    {stage name: (action, record to write, reasons)}, for the selected stages.
  """
  ids, actions = {}, {}
  continuing_stages, lowered = _lowered_rates(stages, selected, cfg)
  for stage in stages:
    record = _read_record(cfg.workdir, stage)
    has_outputs = _has_outputs(cfg.workdir, stage)
    if record is not None and not record.get("done") and not has_outputs:
      record = None  # It stopped before writing anything: no claim on the workdir.
    wanted = {"settings": _settings(cfg, stage), "inputs": {d: ids.get(d) for d in stage.after}}
    changes = _changes(record, wanted) if record else []
    continuing = stage.name in continuing_stages
    if record and record.get("done") and changes and all(
        n in lowered and wanted["settings"][n] == lowered[n] for n in changes) and not _damage(
            cfg.workdir, stage):
      # Finished before a later stage's divergence: kept, its record saying so. (A damaged
      # one is not: mending it would train at the new rate, so it is refused as changed.)
      record = dict(record, later_settings={**record.get("later_settings", {}),
                                            **{n: lowered[n] for n in changes}})
      actions[stage.name] = ("amend", record, changes)
      changes = []
    # --force redoes a selected stage, removing its outputs: their damage does not matter.
    check = record and (continuing or not changes) and not (cfg.force and stage.name in selected)
    damaged = _damage(cfg.workdir, stage) if check else []
    if stage.name not in selected:
      usable = record and record.get("done") and not changes and not damaged
      ids[stage.name] = record["id"] if usable else None
      continue
    for dep in stage.after:
      if dep not in selected and ids.get(dep) is None:
        group = next(s.group for s in stages if s.name == dep)
        raise ConfigError(f"--stages: stage {stage.group} needs the output of {group}, which "
                          f"is not finished with these settings; add {group} to --stages")
    if record is None and has_outputs and stage.trains and not cfg.force:
      raise ConfigError(
          f"--workdir={cfg.workdir} holds outputs of stage {stage.name} without a readable "
          "record of their settings; use another --workdir, or --force to redo it")
    if record is None:
      action = "redo" if has_outputs else "run"
    elif continuing:
      action = "resume"
    elif changes and stage.trains and not cfg.force:
      raise ConfigError(
          f"--workdir={cfg.workdir} holds stage {stage.name} run with other settings "
          f"({', '.join(changes)}); use another --workdir, or --force to redo it")
    elif changes or cfg.force or (damaged and not stage.trains):
      action = "redo"
    else:
      action = "skip" if record.get("done") and not damaged else "resume"
    # A finished stage mended by resuming retrains some steps: outside --deterministic its
    # outputs change, so it gets a new id and the stages after it are done again.
    keep = action == "skip" or (action == "resume" and (
        not record.get("done") or not damaged or cfg.deterministic))
    new = dict(wanted, id=record["id"] if keep else uuid.uuid4().hex)
    ids[stage.name] = new["id"]
    if action == "skip" and stage.name in actions:
      continue  # Amended: its record is rewritten, nothing is run.
    actions[stage.name] = (action, new, changes or damaged)
  return actions


def _divergence_section(workdir):
  """The runs that diverged, and where they went on at a lower rate."""
  rows = []
  for run, events in sorted(artifacts.divergences(workdir).items()):
    for event in events:
      rate = event.get("continued_learning_rate")
      rows.append([os.path.relpath(run, workdir), event["step"], event["loss"],
                   f"{event['learning_rate']:g}", event.get("continued_from_step", "not yet"),
                   "not yet" if rate is None else f"{rate:g}"])
  if not rows:
    return []
  return [report.Section(
      title="Divergences", summary=[
          f"{len(rows)} divergence(s): each run below trained at more than one learning "
          "rate (the flags show the last). In its stage, runs that finished before the "
          "divergence kept their rate; runs started after it trained at the lower one."],
      blocks=[report.Table(header=["run", "diverged at step", "loss", "learning rate",
                                   "continued from step", "at learning rate"],
                           rows=rows, numeric=(1, 3, 4, 5))])]


def _report_stage(experiment, stages, planned):
  def run(ctx):
    sections = _divergence_section(ctx.cfg.workdir)
    envelope = results.read(ctx.cfg.workdir, experiment.name)
    if envelope is not None:
      sections += experiment.sections(ctx, envelope)
    for name, model_names in planned.items():
      envelope = results.read(ctx.cfg.workdir, name)
      if envelope is not None:
        # Results hold the models sorted by name; the report shows them in the plan's
        # order (scratch before the transferred run), without those of an older plan.
        found = envelope["payload"]["models"]
        payload = dict(envelope["payload"],
                       models={m: found[m] for m in model_names if m in found})
        sections.append(analyses.section(analyses.get(name), payload, ctx.cfg.workdir))
    if ctx.chief:
      path = report.render(ctx.cfg.workdir, title=experiment.title, sections=sections,
                           config=_saved_flags(ctx.cfg))
      logging.info("report: wrote %s", path)

  return Stage(name="report", group="report", run=run, after=tuple(s.name for s in stages),
               outputs=("report.html", "figures"))


def _analysis_stage(experiment, name, model_names, cfg):
  analysis = analyses.get(name)
  sources = experiment.models(cfg)

  def run(ctx):
    settings = types.SimpleNamespace(**{n: getattr(ctx.cfg, n) for n in analysis.flags})
    models = {m: (lambda m=m: sources[m].load(ctx)) for m in model_names}
    analyses.run_analysis(analysis, models, experiment.analysis_data(ctx), settings,
                          ctx.cfg.workdir, config=vars(settings), write=ctx.chief)

  return Stage(name=f"analysis/{name}", group="analyze", run=run,
               reads=tuple(analysis.flags) + tuple(experiment.data_flags),
               after=tuple(dict.fromkeys(sources[m].stage for m in model_names)),
               outputs=(os.path.join(results.RESULTS_DIR, f"{name}.json"),
                        os.path.join("analyses", name)))


def all_stages(experiment, cfg):
  """The experiment's stages, then one per analysis, then the report."""
  stages = list(experiment.stages(cfg))
  plan_ = experiments.analysis_plan(experiment, cfg, cfg.analyses)
  stages += [_analysis_stage(experiment, n, m, cfg) for n, m in plan_.items()]
  return stages + [_report_stage(experiment, stages, plan_)]


def select(stages, requested, experiment):
  groups = list(dict.fromkeys(s.group for s in stages))
  unknown = [g for g in requested if g not in groups]
  if unknown:
    raise ConfigError(f"--stages={','.join(requested)}: {unknown[0]!r} is not a stage of "
                      f"experiment {experiment.name}; choose from {', '.join(groups)}")
  return {s.name for s in stages if not requested or s.group in requested}


def _saved_flags(cfg):
  return {k: v for k, v in sorted(vars(cfg).items()) if k not in ("force", "stages")}


def _run_stages(experiment, stages, actions, ctx):
  """Runs the planned stages in order, recording each one's start and end (chief)."""
  cfg, strategy = ctx.cfg, ctx.strategy
  if ctx.chief:
    io.write_json(ctx.path(FLAGS_FILE), _saved_flags(cfg), unless_same=True)
  logging.info("workdir %s, experiment %s, %d replica(s)", cfg.workdir, experiment.name,
               strategy.num_replicas_in_sync)
  for stage in stages:
    if stage.name not in actions:
      continue
    action, record, changes = actions[stage.name]
    if action == "skip":
      logging.info("stage %s: up to date; skipping", stage.name)
      continue
    if action == "amend":
      logging.info("stage %s: finished before %s was lowered for a later stage's divergence; "
                   "keeping it", stage.name, ", ".join(changes))
      if ctx.chief:
        io.write_json(_record_path(cfg.workdir, stage.name), record)
      continue
    if action == "redo":
      logging.info("stage %s: redoing (%s)", stage.name, ", ".join(changes) or "--force")
    if ctx.chief:
      if action == "redo":
        for output in stage.outputs:
          artifacts.remove(ctx.path(output))
      io.write_json(_record_path(cfg.workdir, stage.name), {**record, "done": False})
    logging.info("stage %s: start", stage.name)
    stage.run(ctx)
    if ctx.chief:
      io.write_json(_record_path(cfg.workdir, stage.name), {**record, "done": True})
    logging.info("stage %s: done", stage.name)


def run(experiment, cfg):
  """Runs the selected stages of `experiment`; returns report.html's path if written
  (by the chief; other workers of a multi-worker run return None)."""
  try:
    strategy = strategy_lib.make_strategy(cfg.strategy, cfg.tpu)
  except ValueError as e:
    raise ConfigError(f"--strategy={cfg.strategy} --tpu={cfg.tpu}: {e}") from None
  preemption.reclaim()
  if hasattr(cfg, "precision"):
    asked = cfg.precision
    cfg.precision, reason = precision.resolve(asked, strategy)
    logging.info("precision %s (--precision=%s: %s)", cfg.precision, asked, reason)
  experiment.check(cfg)
  cfg = experiment.resolve(cfg)
  stages = all_stages(experiment, cfg)
  selected = select(stages, cfg.stages, experiment)
  actions = plan(stages, selected, cfg)
  ctx = Context(cfg, strategy, strategy_lib.is_chief(strategy))
  # Only the chief writes into the workdir, so only it holds the workdir's lock; taken
  # after every check that can refuse the command, so a refusal writes nothing.
  with lock.held(cfg.workdir) if ctx.chief else contextlib.nullcontext():
    _run_stages(experiment, stages, actions, ctx)
  return ctx.path("report.html") if "report" in actions and ctx.chief else None
