"""quick.cfg, the default run, is stable: no variant's logged loss spikes.

The settings were chosen by `sweeps/stability.py` (README, "How quick.cfg was chosen");
this test runs quick.cfg itself for the first steps of every stage, where the spikes of
earlier settings happened (at steps 5-20), and checks every logged loss against the
bound the report uses."""
import json
import os
import subprocess
import sys

from conftest import REPO
from tfrandlabels.analysis import curves

RUN = os.path.join(REPO, "pipelines", "run.py")
STEPS = 30


def test_every_variant_stays_below_the_spike_bound(embedded_dir, tmp_path):
  workdir = tmp_path / "work"
  command = [sys.executable, RUN, "--flagfile=quick.cfg", f"--workdir={workdir}",
             f"--data_dir={embedded_dir}", f"--pretrain_steps={STEPS}",
             f"--finetune_steps={STEPS}", "--seeds=0", "--log_every=5", "--steps_per_loop=5",
             "--stages=pretrain,finetune"]
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert done.returncode == 0, done.stderr[-4000:]
  histories = sorted(workdir.glob("**/history.jsonl"))
  names = {str(p.parent.relative_to(workdir)) for p in histories}
  assert names == {"pretrain", "finetune/scratch/seed0", "finetune/pretrained_k1/seed0",
                   "finetune/pretrained_k2/seed0", "finetune/no_rescaling_k1/seed0",
                   "finetune/covariance_k1/seed0"}
  for path in histories:
    history = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in history] == list(range(5, STEPS + 5, 5)), path
    worst = curves.worst_loss_ratio(history, 10)
    assert worst <= curves.SPIKE_RATIO, (path, [round(r["loss"], 2) for r in history])
