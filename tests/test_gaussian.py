"""The Gaussian random-label experiment: data statistics, settings, and the stage."""
import json
import os
import sys

import numpy as np
import pytest

from tfrandlabels.data import synthetic
from tfrandlabels.pipeline import stages

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gaussian_data_has_the_requested_covariance_and_random_labels():
  variances = synthetic.variance_ladder(30, 0.1, 3.0)
  np.testing.assert_allclose(variances[:3], [0.1, 0.2, 0.3])
  examples = list(synthetic.gaussian_random_labels(variances, 20000, 10, seed=0)
                  .as_numpy_iterator())
  inputs = np.stack([e["image"] for e in examples]).astype(np.float64)
  covariance = np.cov(inputs, rowvar=False)
  np.testing.assert_allclose(np.diag(covariance), variances, rtol=0.05)
  assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 0.06
  counts = np.bincount([e["label"] for e in examples], minlength=10)
  assert np.abs(counts / 20000 - 0.1).max() < 0.01
  assert [e["index"] for e in examples[:3]] == [0, 1, 2]


@pytest.mark.parametrize("text, message", [
    ("30:0.1-3.0:2048x256", "is not DIM:LOW-HIGH:WIDTHS:SAMPLES"),
    ("30:3.0-0.1:256x256:100", "0 < low <= high"),
    ("30:0.1-3.0:0x256:100", "needs widths and samples >= 1"),
])
def test_bad_settings(text, message):
  with pytest.raises(ValueError, match=message):
    stages.parse_gaussian_setting(text)


def test_gaussian_stage_tracks_the_transfer_function(tmp_path):
  sys.path.insert(0, os.path.join(REPO, "pipelines"))
  import run  # pylint: disable=import-outside-toplevel
  sys.path.pop(0)
  run.FLAGS.unparse_flags()
  run.FLAGS(["run.py", f"--flagfile={os.path.join(REPO, 'gaussian.cfg')}",
             f"--workdir={tmp_path}", "--gaussian_settings=4:0.5-2.0:16x8:256",
             "--gaussian_steps=20", "--log_every=10", "--steps_per_loop=10",
             "--checkpoint_every=10", "--batch_size=32"])
  from tfrandlabels.pipeline import runner  # pylint: disable=import-outside-toplevel
  report = runner.run(run.settings())
  summary = json.loads((tmp_path / "gaussian.json").read_text())
  result = summary["d4_w16x8_n256"]
  np.testing.assert_allclose(result["sigma"], np.sqrt([2.0, 1.5, 1.0, 0.5]))
  assert result["step"] == [10, 20]
  assert all(len(f) == 4 and min(f) > 0 for f in result["transfer_function"])
  html = open(report).read()
  assert "Gaussian inputs with random labels" in html
  assert (tmp_path / "figures" / "gaussian.png").exists()
