"""Sweeps training settings of the gaussian experiment and names the shape of f in each.

Maennel et al. (NeurIPS 2020, App. E.1) do not give the optimizer, rate or length of
their Gaussian runs; their plots show three shapes of the first layer's transfer
function over the data's variances (decreasing for d=10; rising then falling for d=30,
widths 2048/256; rising then saturating for d=30, widths 256/256). This runs
`pipelines/run.py` once per point of a grid (as `stability.py` does) and prints, per
point and setting, the shape of the seeds' mean f at the end of training and at each
quarter of it (`analysis/shape.py`), f at the smallest variance, its highest value and
f at the largest variance, and the train accuracy on the random labels. This is how
gaussian.cfg's optimizer, rate and length were chosen (README, "Gaussian inputs").

  python sweeps/gaussian_shapes.py --workdir=/tmp/shapes --grid=learning_rate=0.1,0.05 \
      -- --flagfile=gaussian.cfg --optimizer=sgd --gaussian_seeds=0,1

Each point gets its own sub-folder of --workdir, so a rerun skips what is finished.
"""
import argparse
import json
import os

import numpy as np

from tfrandlabels import io
from tfrandlabels.analysis import shape
from tfrandlabels.pipeline import results

import stability  # pylint: disable=wrong-import-order


def shapes_over_training(run, tolerance, parts=4):
  """The shape of the seeds' mean f at `parts` evenly spaced records, the last included."""
  records = len(run["tracks"][0]["step"])
  found = {}
  for index in np.linspace(records / parts, records, parts).round().astype(int) - 1:
    mean = np.mean([np.asarray(t["transfer_function"][index])[::-1] for t in run["tracks"]],
                   axis=0)
    found[run["tracks"][0]["step"][index]] = shape.curve_shape(mean, tolerance)
  return found


def describe(run, tolerance):
  return {"shape": run["shape"], "seed_shapes": run["seed_shapes"],
          "shape_by_step": shapes_over_training(run, tolerance),
          "f_smallest_variance": round(run["last_mean"][0], 3),
          "f_highest": round(max(run["last_mean"]), 3),
          "variance_of_highest": run["variance"][int(np.argmax(run["last_mean"]))],
          "f_largest_variance": round(run["last_mean"][-1], 3),
          "train_accuracy": round(float(np.mean(run["final_train_accuracy"])), 3)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="Parent folder of the runs.")
  parser.add_argument("--grid", action="append", required=True,
                      help="NAME=V1,V2,...: a flag of pipelines/run.py and its values.")
  parser.add_argument("run_args", nargs="*", help="Arguments for pipelines/run.py.")
  args = parser.parse_args()
  table = {}
  for setting in stability.settings(stability.parse_grid(args.grid)):
    envelope = results.read(stability.run(args.workdir, setting, args.run_args), "gaussian")
    tolerance = envelope["config"]["gaussian_shape_tolerance"]
    table[stability.label(setting)] = {
        name: describe(run, tolerance) for name, run in envelope["payload"]["settings"].items()}
    for name, row in table[stability.label(setting)].items():
      print(f"{stability.label(setting)}  {name}: {json.dumps(row)}", flush=True)
    io.write_json(os.path.join(args.workdir, "sweep.json"), table)


if __name__ == "__main__":
  main()
