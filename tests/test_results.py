"""The results format: every writer and reader goes through `pipeline.results`."""
import json

import pytest

from tfrandlabels.errors import ConfigError
from tfrandlabels.pipeline import results

ANALYSIS = {"data": {"dataset": "embedded", "split": "test"},
            "models": {"scratch": {"metrics": {"misalignment": 1.2}, "plots": [
                {"name": "maps", "caption": "c", "path": "analyses/a/scratch/maps.png"}]}}}


def test_round_trip_on_ram(tmp_path):
  workdir = f"ram://{tmp_path}"
  path = results.write(workdir, kind="analysis", name="alignment", config={"x": 1},
                       payload=ANALYSIS)
  assert path == f"{workdir}/results/alignment.json"
  envelope = results.read(workdir, "alignment")
  assert envelope["schema_version"] == results.SCHEMA_VERSION
  assert envelope["payload"] == ANALYSIS and envelope["config"] == {"x": 1}
  assert results.read(workdir, "missing") is None


def test_writer_refuses_a_payload_of_another_layout(tmp_path):
  bad = {"data": {}, "models": {"scratch": {"metrics": {}}}}
  with pytest.raises(ConfigError, match=r"alignment.payload.models\['scratch'\] is missing "
                                        "'plots'"):
    results.write(str(tmp_path), kind="analysis", name="alignment", config={}, payload=bad)
  assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("content, message", [
    ('{"schema_version": 0, "kind": "analysis"}', "has schema_version 0, this release reads 1"),
    ('{"schema_version": 1, "kind": "analysis", "name": "a", "config": {}}',
     "is missing 'payload'"),
    ('{"schema_version": 1, "kind": "anal', "is not valid JSON"),
])
def test_reader_refuses_damaged_or_foreign_files(tmp_path, content, message):
  path = tmp_path / "results" / "a.json"
  path.parent.mkdir()
  path.write_text(content)
  with pytest.raises(ConfigError, match=message) as error:
    results.read(str(tmp_path), "a")
  assert f"delete {path}" in str(error.value)


def test_transfer_payload_layout_is_checked_recursively():
  curve = {k: [] for k in ("step", "accuracy_mean", "accuracy_ci95", "accuracy_per_seed",
                           "loss_mean", "loss_ci95", "loss_per_seed")}
  variant = {"variant": "scratch", "transfer_layers": 0, "seeds": [0], "curve": curve,
             "steps_to_target": {"per_seed": [None], "mean": None},
             "speedup_over_scratch": None,
             "final_test_accuracy": {"per_seed": [0.5], "mean": 0.5, "ci95": 0.0},
             "worst_loss_over_ln_c": [0.9]}
  payload = {"target_accuracy": 0.8, "variants": {"scratch": variant}, "tracks": {},
             "pretrain": {"steps": 1, "final_train_accuracy": 0.1,
                          "realized_label_noise": 0.9}}
  results.validate(payload, results.TransferPayload)
  del variant["curve"]["loss_per_seed"]
  with pytest.raises(ConfigError, match=r"\['scratch'\].curve is missing 'loss_per_seed'"):
    results.validate(json.loads(json.dumps(payload)), results.TransferPayload)

