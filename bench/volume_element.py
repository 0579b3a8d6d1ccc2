"""Benchmark: the log volume element over an image plane, batched against the reference.

All contenders compute the same thing: on a plane through three seeded random 32x32x3
images (`geometry.plane_through`, an R x R grid), the Jacobian J of the feature map of a
small CNN (the project's `simple_cnn` with --filters filters and --hidden hidden units,
seeded; the feature map is the input of its last Dense layer) and the log10 volume
element from the singular values of J / sqrt(n).

  batched    what the `volume_element` analysis runs: `volume_element.log_volumes`,
             --inputs_per_pass / --chunk points per pass, one forward pass over them
             and one backward pass per feature, --chunk of them at a time, all traced
             into one graph.
  reference  the approach of the reference code (Pehlevan-Group/nn_curvature, PyTorch
             `torch.autograd.functional.jacobian`), in TensorFlow: batches of 5 images,
             one forward pass, then one backward pass per feature (a persistent tape).
  pytorch    the reference code's own call, `torch.autograd.functional.jacobian` of the
             batch-summed features on batches of 5, on an equivalent PyTorch model with the
             same weights (only if torch is installed; it is not a dependency:
             `pip install torch` for a CPU build).

Each contender, pytorch included, turns its Jacobians into log volumes with the same
`geometry.log10_volume` (zero singular values left out, not summed as -inf). After one untimed
warm-up (tracing) each, the contenders alternate over --rounds rounds, the order reversed
every other round (`rounds.alternate`), so a load change on the machine hits all of
them; the medians are compared.

Run: .venv/bin/python bench/volume_element.py   The last line is
`volume_vs_reference=<ratio>`, the reference's median time over the batched one's.
"""
import argparse
import math
import os
import time

import numpy as np
import tensorflow as tf

from tfrandlabels import models
from tfrandlabels.analyses import volume_element
from tfrandlabels.analysis import geometry

import rounds

SHAPE = (32, 32, 3)
REFERENCE_BATCH = 5  # Images per Jacobian batch in the reference code.


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--resolution", type=int, default=12, help="grid points per plane axis")
  parser.add_argument("--filters", type=int, default=32, help="simple_cnn conv filters")
  parser.add_argument("--hidden", type=int, default=64, help="simple_cnn hidden units (n)")
  parser.add_argument("--inputs_per_pass", type=int, default=256,
                      help="batched: model inputs per pass (--volume_batch)")
  parser.add_argument("--chunk", type=int, default=4,
                      help="batched: Jacobian rows at a time (--volume_chunk)")
  parser.add_argument("--rounds", type=int, default=5, help="timed rounds")
  return parser.parse_args()


def reference(features, points):
  """One forward pass per batch of 5, then one backward pass per feature."""
  logs = []
  for start in range(0, len(points), REFERENCE_BATCH):
    batch = tf.constant(points[start:start + REFERENCE_BATCH])
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(batch)
      outputs = features(batch, training=False)
      columns = [outputs[:, j] for j in range(outputs.shape[1])]
    rows = [tf.reshape(tape.gradient(column, batch), [len(batch), -1]) for column in columns]
    logs.append(geometry.log10_volume(tf.stack(rows, axis=1).numpy())[0])
  return np.concatenate(logs)


def pytorch_contender(model):
  """fn(points) -> log volumes with torch.autograd.functional.jacobian, or None."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count())
  conv, dense = model.get_layer("conv1"), model.get_layer("dense1")
  conv_weight = torch.from_numpy(np.transpose(conv.kernel.numpy(), (3, 2, 0, 1)).copy())
  conv_bias = torch.from_numpy(conv.bias.numpy())
  dense_weight = torch.from_numpy(dense.kernel.numpy().T.copy())
  dense_bias = torch.from_numpy(dense.bias.numpy())

  def features(x):  # x: [B, C, H, W]; flattened as Keras does, channels last.
    hidden = torch.relu(torch.nn.functional.conv2d(x, conv_weight, conv_bias))
    flat = hidden.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
    return torch.relu(flat @ dense_weight.T + dense_bias)

  def run(points):
    logs = []
    x = torch.from_numpy(np.transpose(points, (0, 3, 1, 2)).copy())
    for start in range(0, len(x), REFERENCE_BATCH):
      batch = x[start:start + REFERENCE_BATCH]
      jacobian = torch.autograd.functional.jacobian(lambda z: features(z).sum(0), batch)
      jacobian = jacobian.permute(1, 0, 2, 3, 4).reshape(len(batch), jacobian.shape[0], -1)
      logs.append(geometry.log10_volume(jacobian.numpy())[0])
    return np.concatenate(logs)

  return run


def main():
  args = parse_args()
  model = models.build_model("simple_cnn", 10, SHAPE, filters=args.filters,
                             hidden=args.hidden, seed=0)
  features = volume_element.feature_model(model)
  images = np.random.default_rng(0).uniform(size=(3, *SHAPE)).astype(np.float32)
  points = geometry.plane_through(*images, resolution=args.resolution)[0]
  print(f"simple_cnn (filters={args.filters}, hidden={args.hidden}) on 32x32x3; plane grid "
        f"{args.resolution}x{args.resolution} = {len(points)} points; J is "
        f"{args.hidden} x {math.prod(SHAPE)} per point")
  contenders = {
      "batched": lambda: volume_element.log_volumes(
          features, points, inputs_per_pass=args.inputs_per_pass, chunk_size=args.chunk)[0],
      "reference": lambda: reference(features, points)}
  torch_run = pytorch_contender(model)
  if torch_run is None:
    print("pytorch: not installed; the torch.autograd.functional.jacobian column is skipped "
          "(`pip install torch` to compare)")
  else:
    contenders["pytorch"] = lambda: torch_run(points)

  values = {}
  for name, run in contenders.items():
    start = time.perf_counter()
    values[name] = run()
    print(f"{name}: warm-up (includes tracing) {time.perf_counter() - start:.2f} s")
  for name in contenders:
    difference = np.max(np.abs(values[name] - values["reference"]))
    print(f"{name}: max |log10 volume - reference| = {difference:.2g} "
          f"(log10 volumes {values[name].min():.2f} to {values[name].max():.2f})")
  seconds = rounds.alternate({name: rounds.timed(run) for name, run in contenders.items()},
                             args.rounds)
  medians = rounds.medians(seconds)
  rounds.report(seconds, suffix=lambda name: f", {len(points) / medians[name]:.1f} points/s")
  if "pytorch" in medians:
    print(f"volume_vs_pytorch={medians['pytorch'] / medians['batched']:.2f}")
  print(f"volume_vs_reference={medians['reference'] / medians['batched']:.2f}")


if __name__ == "__main__":
  main()
