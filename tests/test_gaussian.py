"""The Gaussian random-label experiment: data statistics, settings, and the stage."""
import os

import numpy as np
import pytest

from tfrandlabels import experiments
from tfrandlabels.analysis import shape
from tfrandlabels.data import synthetic
from tfrandlabels.errors import ConfigError
from tfrandlabels.experiments import gaussian
from tfrandlabels.pipeline import results
from tfrandlabels.pipeline import run_main
from tfrandlabels.pipeline import runner

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


def _setting(folder, name, **values):
  path = folder / f"{name}.cfg"
  path.write_text("".join(f"--{k}={v}\n" for k, v in values.items()))
  return str(path)


GOOD = dict(dim=4, variance_min=0.5, variance_max=2.0, widths="16,8", samples=256)


@pytest.mark.parametrize("change, message", [
    (dict(widths="0,8"), "--widths=0,8 must be integers >= 1"),
    (dict(variance_min=3.0), "0 < low <= high"),
    (dict(samples=0), "samples"),
    (dict(dim="x"), "dim"),
])
def test_bad_settings_name_the_file(tmp_path, change, message):
  path = _setting(tmp_path, "bad", **{**GOOD, **change})
  with pytest.raises(ConfigError, match=message) as error:
    gaussian.parse_setting(path)
  assert f"--gaussian_settings: {path}" in str(error.value)


def test_shipped_settings_parse():
  names = [gaussian.setting_name(gaussian.parse_setting(os.path.join("gaussian", f)))
           for f in ("d10_wide.cfg", "d30_wide.cfg", "d30_narrow.cfg")]
  assert names == ["d10_v1-1.9_w2048x256_n10000", "d30_v0.1-3_w2048x256_n10000",
                   "d30_v0.1-3_w256x256_n2000"]


def test_gaussian_experiment_tracks_the_transfer_function(tmp_path):
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["run.py", f"--flagfile={os.path.join(REPO, 'gaussian.cfg')}",
               f"--workdir={tmp_path / 'work'}",
               f"--gaussian_settings={_setting(tmp_path, 'tiny', **GOOD)}",
               "--gaussian_steps=20", "--log_every=10", "--steps_per_loop=10",
               "--checkpoint_every=10", "--batch_size=32", "--gaussian_seeds=3,5"])
  experiment = experiments.get("gaussian")
  report = runner.run(experiment, run_main.settings(experiment))
  envelope = results.read(str(tmp_path / "work"), "gaussian")
  result = envelope["payload"]["settings"]["d4_v0.5-2_w16x8_n256"]
  assert result["seeds"] == [3, 5] and len(result["tracks"]) == 2
  for track in result["tracks"]:
    np.testing.assert_allclose(track["sigma"], np.sqrt([2.0, 1.5, 1.0, 0.5]))
    assert track["step"] == [10, 20]
    assert all(len(f) == 4 and min(f) > 0 for f in track["transfer_function"])
  # The seeds differ, and the summary is their mean and spread over ascending variances.
  last = np.array([t["transfer_function"][-1][::-1] for t in result["tracks"]])
  assert not np.allclose(last[0], last[1])
  np.testing.assert_allclose(result["variance"], [0.5, 1.0, 1.5, 2.0])
  np.testing.assert_allclose(result["last_mean"], last.mean(axis=0))
  np.testing.assert_allclose(result["last_sd"], last.std(axis=0, ddof=1))
  assert result["shape"] == shape.curve_shape(last.mean(axis=0))
  assert result["seed_shapes"] == [shape.curve_shape(f) for f in last]
  html = open(report).read()
  assert "Gaussian inputs with random labels" in html
  assert (tmp_path / "work" / "figures" / "gaussian.png").exists()


VARIANCE = np.linspace(0.1, 3.0, 30)


@pytest.mark.parametrize("curve, expected", [
    # The paper's three shapes (App. E.1), with their values read off its plots.
    (0.38 - 0.065 * (VARIANCE - 0.1) / 2.9, "decreasing"),
    (np.where(VARIANCE < 1.1, 0.18 + 0.03 * VARIANCE / 1.1,
              0.21 - 0.047 * ((VARIANCE - 1.1) / 1.9) ** 1.5), "interior maximum"),
    (0.25 - 0.07 * np.exp(-VARIANCE / 0.4), "saturating"),
    (0.18 + 0.03 * VARIANCE, "increasing"),
    (0.19 + 0 * VARIANCE, "flat"),
    (0.3 + 0.02 * (VARIANCE - 1.5) ** 2, "interior minimum"),
])
def test_curve_shape_names_the_papers_shapes_through_noise(curve, expected):
  rng = np.random.default_rng(0)
  # Per-direction noise of f: about 1.5% of its value, as between neighbours in a run.
  for _ in range(20):
    assert shape.curve_shape(curve + rng.normal(0, 0.003, curve.size)) == expected


def test_curve_shape_refuses_what_has_no_shape():
  for values in ([1.0, 2.0], [1.0, np.nan, 2.0], [[1.0, 2.0, 3.0]]):
    with pytest.raises(ValueError, match="at least 3 finite numbers"):
      shape.curve_shape(values)
