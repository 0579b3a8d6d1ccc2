"""Trains a small simple_cnn on `embedded`, tracking alignment, and saves its weights.

Run by the trainer tests.

Usage: python tests/trainer_worker.py MODEL_DIR STEPS STRATEGY OUT.npz [CPUS]
With STRATEGY=multi_worker_mirrored the cluster comes from TF_CONFIG.
"""
import sys

import numpy as np

from conftest import EMBEDDED_DATA_DIR
from tfrandlabels import data
from tfrandlabels import models
from tfrandlabels.data import ops
from tfrandlabels.training import hooks
from tfrandlabels.training import strategy as strategy_lib
from tfrandlabels.training import trainer

BATCH = 32


def dataset():
  return data.corrupt_labels(data.load("embedded", "train[:256]", data_dir=EMBEDDED_DATA_DIR),
                             fraction=1.0, num_classes=10, seed=0)


def config(steps, checkpoint_every=2):
  return trainer.TrainConfig(steps=steps, batch_size=BATCH, learning_rate=0.02,
                             deterministic=True, seed=1, steps_per_loop=2, log_every=2,
                             checkpoint_every=checkpoint_every)


def run(model_dir, steps, strategy, checkpoint_every=2, extra_hooks=()):
  model, _ = trainer.train(
      model_fn=lambda: models.build_model("simple_cnn", 10, (32, 32, 3), filters=16,
                                          hidden=16, seed=0),
      train_input=lambda start: data.make_input_fn(
          dataset, global_batch_size=BATCH, training=True, seed=2, start_step=start,
          batch_ops=[ops.normalize()]),
      config=config(steps, checkpoint_every), strategy=strategy, model_dir=model_dir,
      # The first conv sees 3x3x3 patches: 27 dimensions.
      hooks=[hooks.AlignmentHook(np.eye(27)), *extra_hooks])
  return model


def main(argv):
  model_dir, steps, strategy_name, out = argv[1:5]
  if len(argv) > 5:
    strategy_lib.split_cpu(int(argv[5]))
  strategy = strategy_lib.make_strategy(strategy_name)
  model = run(model_dir, int(steps), strategy)
  np.savez(out, *model.get_weights())


if __name__ == "__main__":
  main(sys.argv)
