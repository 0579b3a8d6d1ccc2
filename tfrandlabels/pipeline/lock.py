"""One run per workdir: `<workdir>/LOCK` names the run that holds it.

Two runs writing the same workdir would interleave checkpoints, records and results,
so a run holds the workdir while it writes (`held`). A second run is refused in one
line naming the holder (host, process id, start time). A lock its holder left behind
(killed outright, power loss) is taken over with a warning, so a crash never needs a
manual clean-up. LOCK is JSON: {host, pid, started (ISO time, UTC), heartbeat (unix
time)}; every write goes through `tf.io.gfile`, so gs:// and ram:// workdirs work.

Whether a holder still runs:
  * on this host: its process exists (`os.kill(pid, 0)`). A dead run's pid taken by
    an unrelated process keeps the lock looking live; the message names the pid, so
    the user can check it.
  * on another host (a gs:// workdir shared by machines): its heartbeat, rewritten
    every HEARTBEAT_SECONDS while held, is younger than STALE_SECONDS. The two hosts'
    clocks are compared, so they must agree to within a few minutes.
  * a LOCK that cannot be read (truncated, not a lock record) has no holder to ask: it
    is taken over with a warning.

What holds, and what does not. The lock is created by renaming a finished temporary
file with `overwrite=False`. TensorFlow implements that as "exists? then rename"
(`RenameFile` in tensorflow/python/lib/io/file_io_wrapper.cc), not as one atomic step,
on every file system: on a local disk two runs started within the same millisecond
can both pass the check (measured here: two threads released together both won in 6
of 2,000 tries). On gs:// a rename is a copy and a delete, so the window is as long as
a copy (tens of milliseconds). Taking over a dead run's lock has the same window. So
the lock reliably refuses a run started while another one works, the case it is for;
two runs started at the same instant may both proceed.
"""
import contextlib
import datetime
import os
import socket
import threading
import time

from absl import logging
import tensorflow as tf

from tfrandlabels import io
from tfrandlabels.errors import ConfigError

LOCK_FILE = "LOCK"
# How often a held lock's heartbeat is rewritten, and how old a heartbeat of another
# host may be before its run counts as gone: ten missed beats, which outlasts a slow
# or briefly unreachable gs:// bucket but frees a dead machine's workdir in minutes.
HEARTBEAT_SECONDS = 60
STALE_SECONDS = 600
_IDENTITY = ("host", "pid", "started")
# Looks before giving up: each retry needs another run to create LOCK between our look
# and our write, and to be gone again by our next look.
_ATTEMPTS = 3
# The LOCK files this process holds: a record with this process's id is live only if so.
_HELD = set()


def _holder(path):
  """The lock record in `path`: None if there is none, {} if it cannot be read."""
  try:
    record = io.read_json(path)
  except (ValueError, tf.errors.NotFoundError):  # Corrupt, or removed while reading.
    return {} if tf.io.gfile.exists(path) else None
  if record is None:
    return None
  valid = (isinstance(record, dict) and isinstance(record.get("host"), str)
           and isinstance(record.get("pid"), int) and record["pid"] > 0
           and isinstance(record.get("started"), str)
           and isinstance(record.get("heartbeat"), (int, float)))
  return record if valid else {}


def _describe(holder):
  return f"host {holder['host']}, process {holder['pid']}, started {holder['started']}"


def _why_dead(holder, path):
  """Why the run named in `holder` no longer runs, or None if it may."""
  if holder["host"] == socket.gethostname():
    if holder["pid"] == os.getpid() and path not in _HELD:
      # A container restarted in place keeps its host name and often its process id.
      return "its process id is this process's own (a restarted container?)"
    try:
      os.kill(holder["pid"], 0)
    except ProcessLookupError:
      return "its process is gone"
    except PermissionError:  # Alive, owned by another user.
      pass
    return None
  age = time.time() - holder["heartbeat"]
  return f"its heartbeat is {age / 60:.0f} minutes old" if age > STALE_SECONDS else None


def _acquire(workdir, path):
  """Creates LOCK for this process, taking over a dead holder's; returns the record."""
  mine = {"host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time(),
          "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec="seconds")}
  for _ in range(_ATTEMPTS):
    holder = _holder(path)
    if holder:
      why = _why_dead(holder, path)
      if why is None:
        raise ConfigError(f"--workdir={workdir} is in use by another run ({_describe(holder)}"
                          "); wait for it to end or choose another --workdir")
      logging.warning("--workdir=%s: taking over the lock of a run that ended without "
                      "releasing it (%s): %s", workdir, _describe(holder), why)
    elif holder == {}:
      logging.warning("--workdir=%s: %s is unreadable (a write cut short?); taking it over",
                      workdir, path)
    try:
      io.write_json(path, mine, overwrite=holder is not None)
      return mine
    except tf.errors.AlreadyExistsError:
      pass  # Another run created it since we looked: decide again on that one.
  raise RuntimeError(f"{path}: no live run held it in {_ATTEMPTS} looks, yet it could not be "
                     "created: the file system's exists and rename disagree")


def _ours(path, mine):
  holder = _holder(path)
  return bool(holder) and all(holder[k] == mine[k] for k in _IDENTITY)


def _beat(workdir, path, mine, stop):
  """Rewrites the heartbeat every HEARTBEAT_SECONDS until `stop`, while LOCK is ours."""
  while not stop.wait(HEARTBEAT_SECONDS):
    try:
      if not _ours(path, mine):
        logging.warning("--workdir=%s: %s no longer names this run (removed, or taken "
                        "over by another run); heartbeat stopped", workdir, path)
        return
      io.write_json(path, dict(mine, heartbeat=time.time()))
    except tf.errors.OpError as e:  # A bucket briefly out of reach: try at the next beat.
      logging.warning("--workdir=%s: could not refresh the lock's heartbeat (%s)", workdir,
                      e.message)


@contextlib.contextmanager
def held(workdir):
  """Holds `workdir` for the block: refuses (ConfigError) if another live run holds it.

  Yields:
    The lock record written ({host, pid, started, heartbeat}).
  """
  path = os.path.join(workdir, LOCK_FILE)
  mine = _acquire(workdir, path)
  _HELD.add(path)
  stop = threading.Event()
  heartbeat = threading.Thread(target=_beat, args=(workdir, path, mine, stop), daemon=True,
                               name="workdir-lock-heartbeat")
  heartbeat.start()
  try:
    yield mine
  finally:
    _HELD.discard(path)
    stop.set()
    heartbeat.join()
    if _ours(path, mine):
      tf.io.gfile.remove(path)
