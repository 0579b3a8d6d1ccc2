"""Every pytest file is also a Bazel test target, so `bazel test //...` runs the suite."""
import glob
import os
import re

# The real path: under Bazel this file is a symlink in a runfiles tree that holds only
# declared files, while the check is about the source tree.
REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def test_every_test_file_has_a_bazel_target():
  with open(os.path.join(REPO, "BUILD")) as f:
    declared = set(re.findall(r'pytest_test\("(tests/test_\w+\.py)"', f.read()))
  present = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "tests", "test_*.py"))}
  assert present == declared, f"add pytest_test(...) to BUILD for {sorted(present - declared)}"
