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


# What the operating system or a remote store says when storage, not the program, fails.
_STORAGE_FAILURES = ("No space left on device", "Disk quota exceeded", "Read-only file system",
                     "Permission denied", "Error executing an HTTP request")


def storage_failure(error, limit=300):
  """A one-line description of `error` if it is a storage failure (a full disk, a
  read-only or forbidden path, an unreachable bucket), else None: a bug, which keeps
  its traceback. All of its lines are kept: TensorFlow puts the path on a second one."""
  text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
  found = [text.index(s) for s in _STORAGE_FAILURES if s in text]
  if not found:
    return None
  # The cause must survive the clipping: a long path (a deep gs:// folder, a TensorFlow
  # op name) before it would otherwise push it out.
  cause = text[min(found):][:limit // 3]
  if min(found) + len(cause) <= limit:
    return text[:limit]
  return f"{text[:limit - len(cause) - 5]} ... {cause}"
