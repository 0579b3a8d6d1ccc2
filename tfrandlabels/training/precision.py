"""`--precision=auto`: the fastest precision the hardware runs natively.

Mixed precision computes layers in 16 bits and keeps float32 master weights, losses,
softmax and metrics (see `trainer`). It pays only where the hardware has 16-bit matrix
units; elsewhere it is emulated and slower than float32. So `auto` looks at the
hardware, never at its name:

  * TPU: mixed_bfloat16 (the MXU multiplies bfloat16);
  * GPU with tensor cores (compute capability >= 7.0): mixed_float16;
  * CPU whose instruction set has bfloat16 matrix units (the `amx_bf16` flag, Intel
    AMX; oneDNN runs bfloat16 matmuls and convolutions on it): mixed_bfloat16;
  * anything else: float32.
"""
import tensorflow as tf

AUTO = "auto"
CPUINFO = "/proc/cpuinfo"
BF16_MATRIX_FLAGS = ("amx_bf16",)
TENSOR_CORE_CAPABILITY = (7, 0)


def cpu_flags(cpuinfo_text):
  """The instruction-set flags of the first processor in /proc/cpuinfo's text."""
  for line in cpuinfo_text.splitlines():
    key, _, value = line.partition(":")
    if key.strip() in ("flags", "Features"):  # x86; ARM says Features.
      return set(value.split())
  return set()


def _host_cpu_flags():
  try:
    with open(CPUINFO) as f:  # A local kernel file, not user data: no gfile.
      return cpu_flags(f.read())
  except OSError:  # Not Linux: no way to know, so no claim of bf16 units.
    return set()


def _gpu_capabilities():
  return [tf.config.experimental.get_device_details(gpu).get("compute_capability")
          for gpu in tf.config.list_physical_devices("GPU")]


def choose(on_tpu, gpu_capabilities, host_flags):
  """The precision `auto` stands for, and why (pure: the hardware facts are arguments).

  Args:
    on_tpu: whether the strategy runs on TPU.
    gpu_capabilities: the (major, minor) compute capability of each GPU (None if
      unknown).
    host_flags: the host CPU's instruction-set flags.

  Returns:
    (precision, reason).
  """
  if on_tpu:
    return "mixed_bfloat16", "TPU"
  if gpu_capabilities:
    if all(c is not None and tuple(c) >= TENSOR_CORE_CAPABILITY for c in gpu_capabilities):
      return "mixed_float16", "GPUs with tensor cores"
    return "float32", "GPU without tensor cores"
  units = sorted(set(BF16_MATRIX_FLAGS) & set(host_flags))
  if units:
    return "mixed_bfloat16", f"CPU with bfloat16 matrix units ({', '.join(units)})"
  return "float32", "CPU without bfloat16 matrix units"


def resolve(precision, strategy):
  """`precision` itself, or for `auto` what this machine runs fastest, and why."""
  if precision != AUTO:
    return precision, "asked for"
  on_tpu = isinstance(strategy, tf.distribute.TPUStrategy)
  return choose(on_tpu, [] if on_tpu else _gpu_capabilities(), _host_cpu_flags())
