"""Chooses a tf.distribute strategy from one flag, so every run is the same code."""
import json
import os
import socket

import tensorflow as tf

from tfrandlabels import errors

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def _check_reachable(tpu, timeout=10):
  """Fails fast on a grpc:// address nobody answers (connecting would hang)."""
  host, _, port = tpu[len("grpc://"):].rpartition(":")
  try:
    socket.create_connection((host, int(port)), timeout=timeout).close()
  except (OSError, ValueError) as e:
    raise ValueError(f"tpu={tpu!r}: could not reach the TPU ({e}); pass its name, a "
                     "grpc://host:port address, or 'local' on a TPU VM") from None


def _tpu_strategy(tpu):
  if tpu.startswith("grpc://"):
    _check_reachable(tpu)
  try:
    # "local" is the resolver's own name for a TPU attached to this VM (a TPU VM),
    # which needs no remote connection; a TPU node is reached over the network.
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    if tpu != "local":
      tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, RuntimeError, tf.errors.OpError) as e:
    raise ValueError(f"tpu={tpu!r}: could not reach the TPU ({errors.first_line(e)}); pass its "
                     "name, a grpc://host:port address, or 'local' on a TPU VM") from None
  return tf.distribute.TPUStrategy(resolver)


def _mirrored():
  """All local GPUs, or all logical CPU devices when there is no GPU."""
  gpus = tf.config.list_logical_devices("GPU")
  devices = gpus or tf.config.list_logical_devices("CPU")
  return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])


def check_tf_config(text):
  """Raises ValueError, naming TF_CONFIG, unless `text` describes a cluster with this
  task in it: {"cluster": {type: [host:port, ...]}, "task": {"type": ..., "index": i}}.
  TensorFlow would otherwise fail deep inside, or wait for a worker that never comes."""
  if not text:
    raise ValueError("TF_CONFIG is not set; multi_worker_mirrored reads the cluster from it")
  try:
    config = json.loads(text)
  except ValueError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON ({e})") from None
  cluster = config.get("cluster") if isinstance(config, dict) else None
  task = config.get("task") if isinstance(config, dict) else None
  if not (isinstance(cluster, dict) and cluster and all(
      isinstance(v, list) and v and all(isinstance(a, str) for a in v)
      for v in cluster.values())):
    raise ValueError('TF_CONFIG needs "cluster": {type: ["host:port", ...]}, got '
                     f"{cluster!r}")
  sizes = ", ".join(f"{k}: {len(v)}" for k, v in sorted(cluster.items()))
  if not (isinstance(task, dict) and task.get("type") in cluster
          and isinstance(task.get("index"), int)
          and 0 <= task["index"] < len(cluster[task["type"]])):
    raise ValueError(f'TF_CONFIG "task" {task!r} is not a task of its cluster ({sizes}); '
                     'give this worker\'s {"type": ..., "index": ...}')


def make_strategy(name="auto", tpu=None):
  """Returns the strategy named by `--strategy` (see STRATEGIES).

  `auto` picks TPU when `tpu` is set, mirrored when there is more than one GPU, and
  the default strategy otherwise. `multi_worker_mirrored` reads the cluster from the
  TF_CONFIG environment variable.
  """
  if name not in STRATEGIES:
    raise ValueError(f"name={name!r} is not one of {', '.join(STRATEGIES)}")
  if name == "auto":
    if tpu:
      name = "tpu"
    elif len(tf.config.list_physical_devices("GPU")) > 1:
      name = "mirrored"
    else:
      name = "default"
  if name == "tpu":
    if not tpu:
      raise ValueError("name='tpu' needs tpu= (a TPU name, grpc://host:port, or 'local')")
    return _tpu_strategy(tpu)
  if name == "mirrored":
    return _mirrored()
  if name == "multi_worker_mirrored":
    check_tf_config(os.environ.get("TF_CONFIG"))
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "one_device":
    device = "/gpu:0" if tf.config.list_logical_devices("GPU") else "/cpu:0"
    return tf.distribute.OneDeviceStrategy(device)
  return tf.distribute.get_strategy()


def split_cpu(count):
  """Splits the host CPU into `count` logical devices (before TF initializes devices).

  Lets mirrored training run over several replicas on a machine without GPUs, e.g.
  for tests or to check a multi-replica configuration on a laptop.
  """
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def is_chief(strategy):
  """Whether this process writes shared outputs (logs, summaries, final artifacts)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  multi_worker = strategy.extended._in_multi_worker_mode()  # pylint: disable=protected-access
  if resolver is None or not resolver.task_type or not multi_worker:
    return True
  if resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return not has_chief and resolver.task_type == "worker" and resolver.task_id == 0
