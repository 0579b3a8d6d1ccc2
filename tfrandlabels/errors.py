"""The one exception type for mistakes a user can fix.

A `ConfigError` is raised where bad input is first seen (a flag, a path, a data set
that cannot serve a split) and caught only in the entry points, which print its
message as one line and exit non-zero. Any other exception is a bug and keeps its
traceback. It subclasses ValueError so library callers can catch either.
"""


class ConfigError(ValueError):
  """User-fixable input: a flag, a file or a data set; the message says what to do."""
