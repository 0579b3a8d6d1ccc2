"""Runs test files with pytest under `bazel test`: bazel_pytest.py TEST_FILE...

Bazel runs this as the main of each py_test target. Exits with pytest's status; when
Bazel asks for a JUnit report (XML_OUTPUT_FILE), pytest writes it, so Bazel lists the
individual test cases.
"""
import os
import sys

import pytest

if __name__ == "__main__":
  # One process: Bazel already runs several targets at once (.bazelrc).
  args = sys.argv[1:] + ["-p", "no:cacheprovider", "-n", "0"]
  if "XML_OUTPUT_FILE" in os.environ:
    args.append("--junitxml=" + os.environ["XML_OUTPUT_FILE"])
  sys.exit(pytest.main(args))
