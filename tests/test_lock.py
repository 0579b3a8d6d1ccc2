"""The workdir lock: one run at a time, a dead holder's lock taken over, on local and
ram:// workdirs (the pipeline's refusal end to end is in test_run.py)."""
import logging
import os
import socket
import subprocess
import time

import pytest
import tensorflow as tf

from tfrandlabels import io
from tfrandlabels.errors import ConfigError
from tfrandlabels.pipeline import lock


@pytest.fixture(params=["local", "ram"])
def workdir(request, tmp_path):
  return str(tmp_path / "work") if request.param == "local" else f"ram://{tmp_path}/work"


def _lock_path(workdir):
  return os.path.join(workdir, lock.LOCK_FILE)


def _plant(workdir, host=None, pid=None, heartbeat=None):
  """Writes a lock record as another run would have; returns it."""
  record = {"host": host or socket.gethostname(), "pid": pid or os.getpid(),
            "started": "2024-05-01T12:00:00+00:00", "heartbeat": heartbeat or time.time()}
  io.write_json(_lock_path(workdir), record)
  return record


def _refusal(workdir, holder):
  return (f"--workdir={workdir} is in use by another run (host {holder['host']}, process "
          f"{holder['pid']}, started {holder['started']}); wait for it to end or choose "
          "another --workdir")


def test_a_second_run_is_refused_in_one_line_and_the_first_releases(workdir):
  with lock.held(workdir) as mine:
    assert io.read_json(_lock_path(workdir)) == mine
    assert mine["pid"] == os.getpid() and mine["host"] == socket.gethostname()
    with pytest.raises(ConfigError) as refused:
      with lock.held(workdir):
        pass
    assert str(refused.value) == _refusal(workdir, mine)
    assert io.read_json(_lock_path(workdir)) == mine
  assert not tf.io.gfile.exists(_lock_path(workdir))
  assert tf.io.gfile.listdir(workdir) == []  # No temporary file is left either.


def test_a_live_process_holds_and_its_lock_is_taken_over_when_it_dies(workdir, caplog):
  sleeper = subprocess.Popen(["sleep", "60"])
  try:
    holder = _plant(workdir, pid=sleeper.pid)
    with pytest.raises(ConfigError) as refused:
      with lock.held(workdir):
        pass
    assert str(refused.value) == _refusal(workdir, holder)
  finally:
    sleeper.kill()
    sleeper.wait()  # Reaped: a zombie still answers os.kill(pid, 0).
  with caplog.at_level(logging.WARNING):
    with lock.held(workdir) as mine:
      assert io.read_json(_lock_path(workdir)) == mine
  assert (f"taking over the lock of a run that ended without releasing it (host "
          f"{holder['host']}, process {sleeper.pid}, started {holder['started']}): its "
          "process is gone") in caplog.text
  assert not tf.io.gfile.exists(_lock_path(workdir))


def test_a_process_of_another_user_counts_as_live(workdir):
  """pid 1 always exists; signalling it may be refused (PermissionError): still live."""
  holder = _plant(workdir, pid=1)
  with pytest.raises(ConfigError, match="process 1,"):
    with lock.held(workdir):
      pass
  assert io.read_json(_lock_path(workdir)) == holder


def test_another_hosts_lock_is_live_while_its_heartbeat_is_fresh(workdir, caplog):
  holder = _plant(workdir, host="elsewhere", pid=12345,
                  heartbeat=time.time() - lock.STALE_SECONDS + 60)
  with pytest.raises(ConfigError) as refused:
    with lock.held(workdir):
      pass
  assert str(refused.value) == _refusal(workdir, holder)
  _plant(workdir, host="elsewhere", pid=12345, heartbeat=time.time() - lock.STALE_SECONDS - 60)
  with caplog.at_level(logging.WARNING):
    with lock.held(workdir) as mine:
      assert io.read_json(_lock_path(workdir)) == mine
  assert "(host elsewhere, process 12345, started" in caplog.text
  assert "its heartbeat is 11 minutes old" in caplog.text


@pytest.mark.parametrize("text", ['{"host": "a", "pi', '{"host": "a"}', "[1, 2]", ""])
def test_an_unreadable_lock_is_taken_over(workdir, text, caplog):
  io.atomic_write(_lock_path(workdir), text)
  with caplog.at_level(logging.WARNING):
    with lock.held(workdir) as mine:
      assert io.read_json(_lock_path(workdir)) == mine
  assert f"{_lock_path(workdir)} is unreadable (a write cut short?); taking it over" in (
      caplog.text)
  assert not tf.io.gfile.exists(_lock_path(workdir))


def test_release_leaves_a_lock_that_is_no_longer_ours(workdir):
  with lock.held(workdir):
    other = _plant(workdir, host="elsewhere", pid=12345)
  assert io.read_json(_lock_path(workdir)) == other


def test_a_lock_created_after_we_looked_is_seen_and_refused(workdir, monkeypatch):
  """The other run's lock appears between our look and our write: the rename with
  overwrite=False fails and we decide again, on the lock now there."""
  holder = _plant(workdir, pid=1)
  looks = []
  real = lock._holder  # pylint: disable=protected-access

  def first_look_finds_none(path):
    looks.append(path)
    return real(path) if len(looks) > 1 else None

  monkeypatch.setattr(lock, "_holder", first_look_finds_none)
  with pytest.raises(ConfigError, match="process 1,"):
    with lock.held(workdir):
      pass
  assert len(looks) == 2 and io.read_json(_lock_path(workdir)) == holder
  assert tf.io.gfile.listdir(workdir) == [lock.LOCK_FILE]  # Our temporary file is gone.


def test_the_heartbeat_is_rewritten_while_held(workdir, monkeypatch):
  monkeypatch.setattr(lock, "HEARTBEAT_SECONDS", 0.01)
  with lock.held(workdir) as mine:
    deadline = time.time() + 60
    while io.read_json(_lock_path(workdir))["heartbeat"] == mine["heartbeat"]:
      assert time.time() < deadline
      time.sleep(0.01)
    beat = io.read_json(_lock_path(workdir))
  assert beat["heartbeat"] > mine["heartbeat"]
  assert {k: v for k, v in beat.items() if k != "heartbeat"} == {
      k: v for k, v in mine.items() if k != "heartbeat"}
  assert not tf.io.gfile.exists(_lock_path(workdir))


def test_a_lock_with_this_process_id_not_held_here_is_taken_over(workdir, caplog):
  """A container restarted in place keeps its host name and often its process id."""
  holder = _plant(workdir)
  with caplog.at_level(logging.WARNING):
    with lock.held(workdir) as mine:
      assert io.read_json(_lock_path(workdir)) == mine != holder
  assert "its process id is this process's own (a restarted container?)" in caplog.text
