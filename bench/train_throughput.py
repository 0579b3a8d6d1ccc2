"""Benchmark: training images/second of the trainer against Keras `model.fit` and PyTorch.

For `simple_cnn` and `resnet18`, every contender trains the same architecture on the
6,000 32x32x3 `embedded` train images scaled to [0, 1], batch 256, SGD with momentum 0.9
at learning rate 0.01, no augmentation:
  trainer_float32  the trainer's inner loop (`trainer._make_runner`: the steps of a round
                   in one host call) at float32, fed by the pipeline `train` uses
                   (`make_input_fn` with `ops.normalize()`);
  trainer_auto     the same at the precision `--precision=auto` resolves to on this
                   machine (`precision.resolve`); where that is float32 it is the same
                   contender, so it is not run twice and trainer_float32's figures stand;
  fit              keras `Model.fit` at float32, one call per round, on a repeated
                   in-memory tf.data set of the same images normalized by the same op;
  pytorch_float32  an equivalent PyTorch model and loop, the reference implementations'
                   framework: random in-memory batches, SGD;
  pytorch_bf16     the same with `torch.autocast("cpu", dtype=torch.bfloat16)` around
                   forward and loss.
The PyTorch pair needs `.venv/bin/pip install torch==2.13.0` (a CPU build; torch is not
a dependency); without it their ratios are nan.

Each contender makes one untimed warm-up call (tracing, filling caches); then they
alternate over --rounds rounds of --steps steps each (resnet18: max(2, steps // 10), as
it is about 15x slower), the order reversed every other round (`rounds.alternate`), so a
load change on the shared machine hits all of them. A round gives steps * 256 images
over its wall time; ratios are of the median images/s. Targets: the trainer at least 2x
PyTorch at float32, 3x PyTorch at bfloat16 (trainer_auto against pytorch_bf16), and at
least as fast as `fit`.

Run: .venv/bin/python bench/train_throughput.py [--data_dir DIR] [--steps 20] [--rounds 5]
The last line reads `simple_cnn trainer_vs_pytorch=<r> trainer_vs_pytorch_bf16=<r>
trainer_vs_fit=<r>` (on one line): trainer_float32 / pytorch_float32, trainer_auto /
pytorch_bf16 and trainer_float32 / fit, two decimals.
"""
import argparse
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfrandlabels import data
from tfrandlabels import models
from tfrandlabels.data import ops
from tfrandlabels.training import precision as precision_lib
from tfrandlabels.training import trainer

import rounds

try:
  import torch
except ImportError:
  torch = None

BATCH = 256
LEARNING_RATE = 0.01
MOMENTUM = 0.9
NUM_CLASSES = 10
SHAPE = (32, 32, 3)


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=None, help="TFDS data_dir for `embedded`")
  parser.add_argument("--steps", type=int, default=20,
                      help="steps per round (simple_cnn; resnet18 max(2, steps // 10))")
  parser.add_argument("--rounds", type=int, default=5, help="timed rounds")
  parser.add_argument("--models", default="simple_cnn,resnet18")
  return parser.parse_args()


def build_model(name):
  return models.build_model(name, NUM_CLASSES, SHAPE, seed=0)


def read_into_memory(data_dir):
  """The `embedded` train split as numpy (uint8 images, int64 labels), for fit and PyTorch."""
  examples = list(data.load("embedded", "train", data_dir).as_numpy_iterator())
  return (np.stack([e["image"] for e in examples]),
          np.array([e["label"] for e in examples], np.int64))


def images_per_second(train, steps):
  """A contender for `rounds.alternate`: () -> images/s of train(), which takes `steps`."""
  seconds = rounds.timed(train)
  return lambda: steps * BATCH / seconds()


def trainer_run(name, precision, data_dir, steps, model_dir):
  """() -> trains `steps` steps with the trainer's inner loop at `precision`.

  This times exactly the inner loop `trainer.train` runs between its stops: the model
  and optimizer of `_build_state`, the `_make_runner` host call, the input pipeline it is
  given. What `train` does at a stop (finite check, record, checkpoint) is left out.
  """
  strategy = tf.distribute.get_strategy()
  config = trainer.TrainConfig(batch_size=BATCH, learning_rate=LEARNING_RATE,
                               momentum=MOMENTUM, precision=precision)
  input_fn = data.make_input_fn(lambda: data.load("embedded", "train", data_dir),
                                global_batch_size=BATCH, training=True,
                                batch_ops=[ops.normalize()])
  # pylint: disable=protected-access
  state = trainer._build_state(lambda: build_model(name), config, strategy, model_dir)
  run = trainer._make_runner(strategy, state, BATCH,
                             strategy.distribute_datasets_from_function(input_fn))
  # pylint: enable=protected-access
  return lambda: run(steps)


def fit_run(name, images, labels, steps):
  """() -> trains `steps` steps with one `model.fit` call (float32).

  The data set repeats in memory, so the new iterator of each call costs nothing.
  """
  model = build_model(name)
  model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  ds = (tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}).repeat()
        .batch(BATCH, drop_remainder=True).map(ops.normalize())
        .map(lambda b: (b["image"], b["label"])).prefetch(tf.data.AUTOTUNE))
  return lambda: model.fit(ds, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)


def torch_model(name):
  nn = torch.nn
  if name == "simple_cnn":
    return nn.Sequential(nn.Conv2d(3, 256, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(30 * 30 * 256, 64), nn.ReLU(), nn.Linear(64, 10))

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.body = nn.Sequential(
          nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
          nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
      self.shortcut = (nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
          nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
      return torch.relu(self.body(x) + self.shortcut(x))

  layers = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
  cin = 64
  for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
    layers += [Block(cin, width, stride), Block(width, width, 1)]
    cin = width
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10)]
  return nn.Sequential(*layers)


def pytorch_run(name, images, labels, steps, bf16):
  """() -> trains `steps` steps of the reference implementations' loop: random
  in-memory batches, SGD, no augmentation; with `bf16`, forward and loss autocast."""
  torch.manual_seed(0)
  model = torch_model(name)
  optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
  x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
  y = torch.from_numpy(labels)

  def run():
    for _ in range(steps):
      index = torch.randint(0, len(x), (BATCH,))
      optimizer.zero_grad()
      with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = torch.nn.functional.cross_entropy(model(x[index].float() / 255), y[index])
      loss.backward()
      optimizer.step()

  return run


def ratios(name, median, auto_name):
  """The comparison line of one model, from the median images/s of its contenders."""
  nan = float("nan")
  trainer_rate = median["trainer_float32"]
  return (f"{name} trainer_vs_pytorch={trainer_rate / median.get('pytorch_float32', nan):.2f} "
          f"trainer_vs_pytorch_bf16={median[auto_name] / median.get('pytorch_bf16', nan):.2f} "
          f"trainer_vs_fit={trainer_rate / median['fit']:.2f}")


def main():
  args = parse_args()
  images, labels = read_into_memory(args.data_dir)
  auto, reason = precision_lib.resolve("auto", tf.distribute.get_strategy())
  print(f"precision auto resolves to {auto} ({reason})")
  # Where auto is float32, trainer_auto is trainer_float32: its figures stand for both.
  auto_name = "trainer_float32" if auto == "float32" else "trainer_auto"
  if auto_name == "trainer_float32":
    print("trainer_auto: the same contender as trainer_float32; not run twice, "
          "trainer_float32's figures stand for it")
  if torch is None:
    print("pytorch: not installed (`.venv/bin/pip install torch==2.13.0`); the PyTorch "
          "contenders are skipped and their ratios are nan")
  else:
    torch.set_num_threads(os.cpu_count())
  lines = {}
  with tempfile.TemporaryDirectory() as model_dir:
    for name in args.models.split(","):
      steps = args.steps if name == "simple_cnn" else max(2, args.steps // 10)
      runs = {"trainer_float32": trainer_run(name, "float32", args.data_dir, steps, model_dir)}
      if auto_name == "trainer_auto":
        runs["trainer_auto"] = trainer_run(name, auto, args.data_dir, steps, model_dir)
      runs["fit"] = fit_run(name, images, labels, steps)
      if torch is not None:
        runs["pytorch_float32"] = pytorch_run(name, images, labels, steps, bf16=False)
        runs["pytorch_bf16"] = pytorch_run(name, images, labels, steps, bf16=True)
      print(f"{name}: batch {BATCH}, {steps} steps a round, {args.rounds} rounds after "
            "1 warm-up call each", flush=True)
      rates = rounds.alternate({key: images_per_second(run, steps) for key, run in runs.items()},
                               args.rounds, warmup=True)
      rounds.report(rates, unit="images/s", digits=0)
      lines[name] = ratios(name, rounds.medians(rates), auto_name)
      print(lines[name], flush=True)
  if "simple_cnn" in lines:
    print(lines["simple_cnn"])


if __name__ == "__main__":
  main()
