"""`--precision=auto` reads the hardware's capabilities, never its name."""
import pytest
import tensorflow as tf

from tfrandlabels.training import precision

SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
CASCADE_LAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni
"""


def test_cpu_flags_are_read_from_cpuinfo():
  assert {"amx_bf16", "avx512f"} <= precision.cpu_flags(SAPPHIRE_RAPIDS)
  assert "amx_bf16" not in precision.cpu_flags(CASCADE_LAKE)
  assert precision.cpu_flags("") == set()


@pytest.mark.parametrize("on_tpu, gpus, cpuinfo, expected", [
    (True, [], CASCADE_LAKE, "mixed_bfloat16"),
    (False, [(8, 0), (8, 0)], CASCADE_LAKE, "mixed_float16"),
    (False, [(6, 1)], SAPPHIRE_RAPIDS, "float32"),  # A GPU without tensor cores.
    (False, [None], CASCADE_LAKE, "float32"),
    (False, [], SAPPHIRE_RAPIDS, "mixed_bfloat16"),
    # Same model name, no bfloat16 matrix units: the flags decide, not the name.
    (False, [], CASCADE_LAKE, "float32"),
])
def test_auto_follows_the_hardware(on_tpu, gpus, cpuinfo, expected):
  chosen, reason = precision.choose(on_tpu, gpus, precision.cpu_flags(cpuinfo))
  assert chosen == expected and reason


def test_a_named_precision_is_kept():
  strategy = tf.distribute.get_strategy()
  assert precision.resolve("mixed_float16", strategy) == ("mixed_float16", "asked for")


def test_auto_on_this_machine_matches_its_cpu_flags():
  with open(precision.CPUINFO) as f:
    has_units = "amx_bf16" in precision.cpu_flags(f.read())
  chosen, _ = precision.resolve("auto", tf.distribute.get_strategy())
  if not tf.config.list_physical_devices("GPU"):
    assert chosen == ("mixed_bfloat16" if has_units else "float32")
