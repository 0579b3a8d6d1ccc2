"""The one exception type for mistakes a user can fix.

A `ConfigError` is raised where bad input is first seen (a flag, a path, a data set
that cannot serve a split) and caught only in the entry points, which print its
message as one line and exit non-zero. Any other exception is a bug and keeps its
traceback. It subclasses ValueError so library callers can catch either.
"""


class ConfigError(ValueError):
  """User-fixable input: a flag, a file or a data set; the message says what to do."""


# TensorFlow's preamble to a failed graph op: its stack follows, indented.
_PREAMBLE = ("Graph execution error", "Detected at node")


def first_line(error, limit=200):
  """The first line of an exception's text that says what happened, for a one-line
  message: TensorFlow's graph-execution preamble and stack lines are skipped."""
  for line in str(error).splitlines():
    if line.strip() and not line[0].isspace() and not line.startswith(_PREAMBLE):
      return line.strip()[:limit]
  return type(error).__name__
