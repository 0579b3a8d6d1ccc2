"""Sweeps training settings of a pipeline run and reports loss spikes and speed.

Runs `pipelines/run.py` once per point of a grid of flag values (every other flag from
the flagfile and the extra arguments), then reads each run's histories and prints, per
setting and run: the worst logged loss as a multiple of ln(num_classes) (a run "spikes"
when it exceeds 2) and, for finetuning runs, the step at which train accuracy first
reached --target_accuracy. This is how quick.cfg's learning rate and warm-up were
chosen (README, "How quick.cfg was chosen").

  python sweeps/stability.py --workdir=/tmp/sweep --grid=learning_rate=0.01,0.003 \
      --grid=warmup_steps=0,50 -- --flagfile=quick.cfg --seeds=0 --pretrain_steps=300

Each setting gets its own sub-folder of --workdir, so a rerun of the same command skips
what is finished (the pipeline's own resumption).
"""
import argparse
import itertools
import json
import os
import subprocess
import sys

import tensorflow as tf

from tfrandlabels import io
from tfrandlabels.analysis import curves

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "pipelines", "run.py")


def parse_grid(entries):
  """['learning_rate=0.01,0.003', ...] -> [('learning_rate', ['0.01', '0.003']), ...]."""
  grid = []
  for entry in entries:
    name, _, values = entry.partition("=")
    if not name or not values:
      sys.exit(f"error: --grid={entry!r} must be NAME=VALUE[,VALUE...]")
    grid.append((name, values.split(",")))
  return grid


def settings(grid):
  """Every combination of the grid's values, as [(name, value), ...] lists."""
  names = [name for name, _ in grid]
  return [list(zip(names, values)) for values in itertools.product(*(v for _, v in grid))]


def label(setting):
  return ",".join(f"{name}={value}" for name, value in setting)


def histories(workdir):
  """{run name: history} for pretrain/ and every finetune/<run>/seed<s>/ of a workdir."""
  found = {}
  for path in sorted(tf.io.gfile.glob(os.path.join(workdir, "*", "history.jsonl")) +
                     tf.io.gfile.glob(os.path.join(workdir, "*", "*", "*", "history.jsonl"))):
    name = os.path.relpath(os.path.dirname(path), workdir)
    found[name] = io.read_jsonl(path)
  return found


def run(root, setting, run_args):
  """Runs pipelines/run.py for one setting of the grid in its own sub-folder of `root`
  (a finished one is skipped by the pipeline's own resumption); returns that folder."""
  workdir = os.path.join(root, label(setting).replace("=", "_").replace(",", "__"))
  command = [sys.executable, RUN, *run_args, f"--workdir={workdir}", "--analyses=none",
             *(f"--{name}={value}" for name, value in setting)]
  print("running:", " ".join(command[1:]), flush=True)
  subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
  return workdir


def summarize(history, num_classes, target):
  worst = curves.worst_loss_ratio(history, num_classes)
  return {"worst_loss_over_ln_c": round(worst, 3), "spikes": worst > curves.SPIKE_RATIO,
          "steps_to_target": curves.steps_to_target(history, target),
          "final_train_accuracy": round(history[-1]["accuracy"], 4)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="Parent folder of the runs.")
  parser.add_argument("--grid", action="append", required=True,
                      help="NAME=V1,V2,...: a flag of pipelines/run.py and its values.")
  parser.add_argument("--num_classes", type=int, default=10)
  parser.add_argument("--target_accuracy", type=float, default=0.8)
  parser.add_argument("run_args", nargs="*", help="Arguments for pipelines/run.py.")
  args = parser.parse_args()
  table = {}
  for setting in settings(parse_grid(args.grid)):
    workdir = run(args.workdir, setting, args.run_args)
    table[label(setting)] = {
        name: summarize(h, args.num_classes, args.target_accuracy)
        for name, h in histories(workdir).items()}
    for name, row in table[label(setting)].items():
      print(f"{label(setting)}  {name}: {json.dumps(row)}", flush=True)
    # After each setting, so a failing one keeps the table of those before it.
    io.write_json(os.path.join(args.workdir, "sweep.json"), table)
  spiking = [s for s, runs in table.items() if any(r["spikes"] for r in runs.values())]
  print(f"settings with a spike (loss > {curves.SPIKE_RATIO:g} ln C): {len(spiking)} of "
        f"{len(table)}")


if __name__ == "__main__":
  main()
