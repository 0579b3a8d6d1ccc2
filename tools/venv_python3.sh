#!/bin/sh
# Runs the Python of <workspace>/.venv. Bazel runs this script through a symlink in a
# runfiles tree; its real path is in the source tree, so the venv is found relative to
# it, in whichever clone the build runs.
workspace="$(dirname "$(dirname "$(readlink -f "$0")")")"
python="$workspace/.venv/bin/python3"
if [ ! -x "$python" ]; then
  echo "tools/venv_python3.sh: no virtualenv at $workspace/.venv; create it with:" >&2
  echo "  python3 -m venv .venv && .venv/bin/pip install -e \".[test]\"" >&2
  exit 1
fi
exec "$python" "$@"
