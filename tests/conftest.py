"""Shared fixtures: the `embedded` data set is prepared once per machine and reused."""
import fcntl
import os
import tempfile

import pytest
import tensorflow_datasets as tfds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Flags of a tiny transfer run on `embedded` (seconds per stage), for end-to-end tests.
TINY = ["--upstream_split=train[:128]", "--downstream_split=train[128:256]",
        "--test_split=test[:64]", "--pretrain_steps=4", "--finetune_steps=4",
        "--batch_size=32", "--seeds=0,1", "--log_every=2", "--steps_per_loop=2",
        "--checkpoint_every=2", "--attribution_images=2", "--attribution_samples=2",
        "--target_accuracy=0.2", "--model_options=filters=8", "--transfer_layers=1"]
# Shared by every test process (pytest and each Bazel test target): preparing
# `embedded` takes ~10 s, so it is done once, under a lock, and reused.
EMBEDDED_DATA_DIR = os.environ.get(
    "TFRANDLABELS_TEST_DATA_DIR", os.path.join(tempfile.gettempdir(), "tfrandlabels_test_data"))


@pytest.fixture(scope="session")
def embedded_dir():
  """A TFDS data_dir holding the prepared `embedded` data set."""
  import tfrandlabels.data  # pylint: disable=unused-import  (registers the builder)
  os.makedirs(EMBEDDED_DATA_DIR, exist_ok=True)
  with open(os.path.join(EMBEDDED_DATA_DIR, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    tfds.builder("embedded", data_dir=EMBEDDED_DATA_DIR).download_and_prepare()
  return EMBEDDED_DATA_DIR


@pytest.fixture(scope="session")
def planted_dir():
  """A TFDS data_dir holding the prepared `planted_high` and `planted_mid` data sets."""
  from tfrandlabels import data  # pylint: disable=import-outside-toplevel
  os.makedirs(EMBEDDED_DATA_DIR, exist_ok=True)
  with open(os.path.join(EMBEDDED_DATA_DIR, ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    for name in ("planted_high", "planted_mid"):
      data.num_classes(name, EMBEDDED_DATA_DIR)  # Prepares it.
  return EMBEDDED_DATA_DIR


def write_tfds_metadata(name, data_dir, split_sizes):
  """Writes TFDS metadata for `name` so that `tfds.testing.mock_data` knows its splits."""
  builder = tfds.builder(name, data_dir=data_dir)
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(
          name=split, shard_lengths=[size], num_bytes=0,
          filename_template=tfds.core.ShardedFileTemplate(
              data_dir=builder.data_dir, dataset_name=name, split=split,
              filetype_suffix="tfrecord"))
      for split, size in split_sizes.items()]))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)


def parse_flagfile(flagfile, *extra):
  """Parses a flagfile of the repository and `extra` flags with the package's flags and
  validators, in process.

  Returns:
    (the experiment, its settings namespace), as `pipelines/run.py` would run them.
  """
  from absl import flags  # pylint: disable=import-outside-toplevel
  from tfrandlabels import experiments  # pylint: disable=import-outside-toplevel
  from tfrandlabels.pipeline import run_main  # pylint: disable=import-outside-toplevel
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["run.py", f"--flagfile={os.path.join(REPO, flagfile)}", *extra])
  experiment = experiments.get(flags.FLAGS.experiment)
  return experiment, run_main.settings(experiment)
