"""Benchmark: training images/second of the trainer against Keras `model.fit` and PyTorch.

For `simple_cnn` and `resnet18` on 32x32x3 `embedded` images, batch 256, SGD with
momentum, all three train the same architecture on the same data in one run:
  trainer  tfrandlabels.training.trainer.train (custom loop, steps_per_loop per call);
  fit      keras Model.fit on the same model and the same tf.data batches;
  pytorch  an equivalent PyTorch model and loop (the reference implementations' framework;
           `pip install torch==2.13.0` installs a CPU build; it is not a dependency).
Warm-up steps (tracing/compilation) are excluded. The last line reads
`simple_cnn trainer_vs_pytorch=<ratio> trainer_vs_fit=<ratio>`.

Run: .venv/bin/python bench/train_throughput.py [--data_dir DIR] [--steps N]
"""
import argparse
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from tfrandlabels import data
from tfrandlabels import io
from tfrandlabels import models
from tfrandlabels.data import ops
from tfrandlabels.training import trainer

BATCH = 256
LEARNING_RATE = 0.01


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=None, help="TFDS data_dir for `embedded`")
  parser.add_argument("--steps", type=int, default=20, help="timed steps (simple_cnn)")
  parser.add_argument("--models", default="simple_cnn,resnet18")
  return parser.parse_args()


def source(data_dir):
  return lambda: data.load("embedded", "train", data_dir)


def run_trainer(name, data_dir, steps):
  """Images/second of the trainer: two host loops of `steps` steps, the first a warm-up."""
  config = trainer.TrainConfig(steps=2 * steps, batch_size=BATCH, learning_rate=LEARNING_RATE,
                               steps_per_loop=steps, log_every=steps,
                               checkpoint_every=2 * steps)
  with tempfile.TemporaryDirectory() as model_dir:
    trainer.train(
        model_fn=lambda: models.build_model(name, 10, (32, 32, 3), seed=0),
        train_input=lambda start: data.make_input_fn(
            source(data_dir), global_batch_size=BATCH, training=True, start_step=start,
            batch_ops=[ops.normalize()]),
        config=config, strategy=tf.distribute.get_strategy(), model_dir=model_dir)
    history = io.read_jsonl(os.path.join(model_dir, trainer.HISTORY))
  return history[1]["images_per_second"]  # The first record includes tracing.


class _Timer(keras.callbacks.Callback):
  def __init__(self, warmup):
    super().__init__()
    self.warmup, self.start, self.batches = warmup, None, 0

  def on_train_batch_end(self, batch, logs=None):
    self.batches += 1
    if self.batches == self.warmup:
      self.start = time.perf_counter()

  def rate(self):
    return (self.batches - self.warmup) * BATCH / (time.perf_counter() - self.start)


def run_fit(name, data_dir, steps):
  warmup = 5
  model = models.build_model(name, 10, (32, 32, 3), seed=0)
  model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  ds = data.make_input_fn(source(data_dir), global_batch_size=BATCH, training=True,
                          batch_ops=[ops.normalize()])()
  ds = ds.map(lambda b: (b["image"], b["label"]))
  timer = _Timer(warmup)
  model.fit(ds, steps_per_epoch=warmup + steps, epochs=1, callbacks=[timer], verbose=0)
  return timer.rate()


def torch_model(name):
  import torch  # pylint: disable=import-outside-toplevel
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


def run_pytorch(name, images, labels, steps):
  """The reference implementations' loop: shuffled in-memory batches, SGD, no augmentation."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    print("pytorch: not installed; `pip install torch==2.13.0` to compare")
    return float("nan")
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())
  model = torch_model(name)
  optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9)
  x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
  y = torch.from_numpy(labels)
  warmup, start = 3, None
  for step in range(warmup + steps):
    if step == warmup:
      start = time.perf_counter()
    index = torch.randint(0, len(x), (BATCH,))
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x[index].float() / 255), y[index])
    loss.backward()
    optimizer.step()
  return steps * BATCH / (time.perf_counter() - start)


def main():
  args = parse_args()
  examples = list(data.load("embedded", "train", args.data_dir).as_numpy_iterator())
  images = np.stack([e["image"] for e in examples])
  labels = np.array([e["label"] for e in examples], np.int64)
  results = {}
  for name in args.models.split(","):
    steps = args.steps if name == "simple_cnn" else max(3, args.steps // 4)
    rates = {"trainer": run_trainer(name, args.data_dir, steps),
             "fit": run_fit(name, args.data_dir, steps),
             "pytorch": run_pytorch(name, images, labels, steps)}
    results[name] = rates
    print(f"{name}: " + ", ".join(f"{k} {v:.0f} img/s" for k, v in rates.items()) +
          f"; trainer/pytorch {rates['trainer'] / rates['pytorch']:.2f}x, "
          f"trainer/fit {rates['trainer'] / rates['fit']:.2f}x", flush=True)
  rates = results.get("simple_cnn")
  if rates:
    print(f"simple_cnn trainer_vs_pytorch={rates['trainer'] / rates['pytorch']:.2f} "
          f"trainer_vs_fit={rates['trainer'] / rates['fit']:.2f}")


if __name__ == "__main__":
  main()
