"""Runs the selected stages of a pipeline after checking everything that can be checked.

All checks happen before anything is written, so a refused command leaves the workdir
as it was.
"""
from absl import logging

from tfrandlabels import data
from tfrandlabels.pipeline import artifacts
from tfrandlabels.pipeline import stages
from tfrandlabels.training import strategy as strategy_lib
from tfrandlabels.training import transfer

STAGES = {"pretrain": stages.pretrain, "finetune": stages.finetune,
          "analyze": stages.analyze, "gaussian": stages.gaussian, "report": stages.report}
# What --force discards for each stage, relative to the workdir.
OUTPUTS = {"pretrain": ["pretrain"], "finetune": ["finetune"],
           "analyze": ["analyze", "results.json"],
           "gaussian": ["gaussian", "gaussian.json"],
           "report": ["report", "report.html", "figures"]}


def _overlap(a, b):
  return any(x[0] == y[0] and max(x[1], y[1]) < min(x[2], y[2]) for x in a for y in b)


def check(cfg):
  """Cross-flag checks that need the data or the model; raises ValueError."""
  if not set(cfg.stages) & {"pretrain", "finetune", "analyze"}:
    return
  up = data.example_ranges(cfg.dataset, cfg.upstream_split, cfg.data_dir)
  down = data.example_ranges(cfg.dataset, cfg.downstream_split, cfg.data_dir)
  if _overlap(up, down):
    raise ValueError(f"--downstream_split={cfg.downstream_split} overlaps --upstream_split="
                     f"{cfg.upstream_split}; the paper's downstream set is disjoint "
                     "(e.g. train[:20000] and train[25000:])")
  data.example_ranges(cfg.dataset, cfg.test_split, cfg.data_dir)
  model = stages.build(cfg, stages.num_classes(cfg), 0)
  for variant in cfg.variants:
    for k in cfg.transfer_layers:
      transfer.check_transfer(model, variant, k)


def run(cfg):
  """Runs cfg.stages in order; returns the report path if the report stage ran."""
  check(cfg)
  flags = vars(cfg)
  changed = artifacts.changed_flags(cfg.workdir, flags)
  if changed and not cfg.force:
    raise ValueError(f"--workdir={cfg.workdir} holds a run with other flags ({', '.join(changed)}"
                     "); use another --workdir, or --force to redo the stages with these flags")
  strategy = strategy_lib.make_strategy(cfg.strategy, cfg.tpu)
  ctx = stages.Context(cfg, strategy, strategy_lib.is_chief(strategy))
  if ctx.chief:
    if cfg.force:
      for stage in cfg.stages:
        for output in OUTPUTS[stage]:
          artifacts.remove(ctx.path(output))
    artifacts.save_flags(cfg.workdir, flags)
  logging.info("workdir %s, %d replica(s), stages %s", cfg.workdir,
               strategy.num_replicas_in_sync, ",".join(cfg.stages))
  for stage in [s for s in STAGES if s in cfg.stages]:
    logging.info("stage %s: start", stage)
    STAGES[stage](ctx)
    logging.info("stage %s: done", stage)
  return ctx.path("report.html") if "report" in cfg.stages else None
