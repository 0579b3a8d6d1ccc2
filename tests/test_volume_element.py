"""The `volume_element` analysis: per-point values against a direct computation, mixed
precision, user errors, and `pipelines/analyze.py` on a saved model."""
import math
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from tfrandlabels import analyses
from tfrandlabels.analyses import volume_element
from tfrandlabels.analyses.registry import AnalysisData
from tfrandlabels.errors import ConfigError
from tfrandlabels.pipeline import results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (6, 6, 2)
NUM_CLASSES = 3
# 7 inputs per pass with 2 Jacobian rows each: batches of 3 points, the last one partial.
SETTINGS = dict(volume_planes=2, volume_resolution=4, volume_top_k=0, volume_batch=7,
                volume_chunk=2, volume_grid_extent=1.5)


def tiny_model(seed):
  """A random conv net whose feature map (the last Dense layer's input) has 5 units."""
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input(SHAPE), keras.layers.Conv2D(6, 3, activation="tanh"),
      keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5, activation="tanh"),
      keras.layers.Dense(NUM_CLASSES)])


def tiny_data():
  """Six random uint8 images, scaled to [0, 1] as the batch op."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (6, *SHAPE), dtype=np.uint8)
  source = lambda: tf.data.Dataset.from_tensor_slices({
      "image": images, "label": np.array([0, 1, 2, 0, 1, 2]), "index": np.arange(6)})
  scale = lambda batch: {**batch, "image": tf.cast(batch["image"], tf.float32) / 255}
  data = AnalysisData(dataset="random", split="all", source=source, batch_ops=[scale],
                      batch_size=4, num_classes=NUM_CLASSES)
  return data, images.astype(np.float64) / 255


def direct(model, points):
  """(predicted, entropy, singular values of J/sqrt(n)) one point at a time, from the
  model's layers."""
  layers = model.layers[:-1]  # Everything before the classifier: the feature map.
  values = []
  for point in np.asarray(points, np.float32):
    x = tf.constant(point[None])
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(x)
      features = x
      for layer in layers:
        features = layer(features, training=False)
      feature_vector = features[0]
    width = feature_vector.shape[0]
    jacobian = tape.jacobian(feature_vector, x, experimental_use_pfor=False).numpy()
    jacobian = jacobian.reshape(width, -1).astype(np.float64)
    singular_values = np.linalg.svd(jacobian / math.sqrt(width), compute_uv=False)
    logits = np.asarray(model.layers[-1](features), np.float64)[0]
    probabilities = special.softmax(logits)
    values.append((np.argmax(logits), -np.sum(probabilities * np.log10(probabilities)),
                   singular_values))
  return [np.array(v) for v in zip(*values)]


def plane_points(x1, x2, x3, resolution):
  """The plane grid, written out: centroid origin, axes x2 - x1 and 2 sqrt 3 (mid - c)."""
  origin = (x1 + x2 + x3) / 3
  u, v = x2 - x1, 2 * math.sqrt(3) * ((x1 + x2) / 2 - origin)
  axis = np.linspace(-1, 1, resolution)
  return np.stack([origin + a * u + b * v for b in axis for a in axis])


def test_plane_values_equal_a_direct_per_point_computation():
  model = tiny_model(seed=1)
  data, images = tiny_data()
  settings = types.SimpleNamespace(**SETTINGS)
  output = volume_element.run(model, data, settings)
  metrics = output.metrics
  assert metrics["feature_map"] == f"input_of_{model.layers[-1].name}"
  assert (metrics["feature_width"], metrics["input_dim"], metrics["top_k"]) == (5, 72, 5)
  assert [r["region"] for r in metrics["regions"]] == ["plane 1", "plane 2", "all planes"]
  assert output.plots["maps"][1].startswith(b"\x89PNG")
  pooled = []
  for plane, region in enumerate(metrics["regions"][:2]):
    points = plane_points(*images[3 * plane:3 * plane + 3], resolution=4)
    predicted, entropy, singular_values = direct(model, points)
    log_volume = np.log10(singular_values).sum(axis=1)
    pooled.append((log_volume, entropy))
    # The analysis's per-point values, for a few points of the plane.
    values = volume_element.point_values(model, volume_element.feature_model(model),
                                         points[[0, 5, 15]].astype(np.float32), settings)
    np.testing.assert_array_equal(values["predicted"], predicted[[0, 5, 15]])
    np.testing.assert_allclose(values["entropy"], entropy[[0, 5, 15]], rtol=1e-5)
    np.testing.assert_allclose(values["log10_volume"], log_volume[[0, 5, 15]], atol=1e-4)
    # The plane's summary is that of the direct values.
    assert region["labels"] == [0, 1, 2]
    assert region["zero_singular_value_points"] == 0
    assert region["rank_correlation"] == pytest.approx(
        stats.spearmanr(log_volume, entropy)[0], abs=1e-3)
    assert region["log10_volume"]["median"] == pytest.approx(np.median(log_volume), abs=1e-4)
    high = log_volume[np.argsort(entropy)[-1:]]  # 10% of 16 points: 1; 50%: 8.
    low = log_volume[np.argsort(entropy)[:8]]
    assert region["volume_ratio"] == pytest.approx(
        np.mean(10.0**high) / np.mean(10.0**low), rel=1e-3)
  log_volume, entropy = (np.concatenate(v) for v in zip(*pooled))
  assert metrics["regions"][2]["rank_correlation"] == pytest.approx(
      stats.spearmanr(log_volume, entropy)[0], abs=1e-3)


def test_a_mixed_precision_model_is_analyzed_in_float32():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = tiny_model(seed=2)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  reference = tiny_model(seed=3)
  reference.set_weights(model.get_weights())
  data, _ = tiny_data()
  settings = types.SimpleNamespace(**{**SETTINGS, "volume_planes": 1})
  got = volume_element.run(model, data, settings).metrics["regions"][0]
  expected = volume_element.run(reference, data, settings).metrics["regions"][0]
  assert got["log10_volume"] == pytest.approx(expected["log10_volume"], abs=1e-5)
  assert got["rank_correlation"] == pytest.approx(expected["rank_correlation"], abs=1e-6)


def test_top_k_sums_the_largest_singular_values():
  model = tiny_model(seed=4)
  data, images = tiny_data()
  settings = types.SimpleNamespace(**{**SETTINGS, "volume_planes": 1, "volume_top_k": 2})
  metrics = volume_element.run(model, data, settings).metrics
  assert metrics["top_k"] == 2
  points = plane_points(*images[:3], resolution=4)
  expected = np.log10(direct(model, points)[2][:, :2]).sum(axis=1)
  values = volume_element.log_volumes(volume_element.feature_model(model),
                                      points.astype(np.float32), top_k=2,
                                      inputs_per_pass=80, chunk_size=5)[0]
  np.testing.assert_allclose(values, expected, atol=1e-4)
  region = metrics["regions"][0]
  assert region["log10_volume"]["max"] == pytest.approx(expected.max(), abs=1e-4)
  assert region["log10_volume"]["median"] == pytest.approx(np.median(expected), abs=1e-4)


def test_user_errors_name_the_flag():
  model = tiny_model(seed=5)
  data, _ = tiny_data()
  with pytest.raises(ConfigError, match=r"--volume_top_k=6 exceeds min\(n, d\) = 5"):
    volume_element.run(model, data, types.SimpleNamespace(**{**SETTINGS, "volume_top_k": 6}))
  with pytest.raises(ConfigError, match="--volume_planes=3 needs 9 examples"):
    volume_element.run(model, data, types.SimpleNamespace(**{**SETTINGS, "volume_planes": 3}))
  logits_only = keras.Sequential([keras.Input(SHAPE), keras.layers.Conv2D(3, 6)])
  with pytest.raises(ConfigError, match="no Dense layer"):
    volume_element.run(logits_only, data, types.SimpleNamespace(**SETTINGS))


def test_analyze_py_on_a_saved_model_writes_results(embedded_dir, tmp_path):
  assert "volume_element" in analyses.available()
  keras.utils.set_random_seed(6)
  model = keras.Sequential([keras.Input((32, 32, 3)),
                            keras.layers.Conv2D(4, 5, strides=2, activation="relu"),
                            keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(10)])
  model.save(tmp_path / "mine.keras")
  process = subprocess.run(
      [sys.executable, os.path.join(REPO, "pipelines", "analyze.py"),
       f"--model_path={tmp_path / 'mine.keras'}", "--dataset=embedded",
       f"--data_dir={embedded_dir}", "--split=test[:8]", "--analyses=volume_element",
       "--volume_planes=1", "--volume_resolution=5", f"--workdir={tmp_path / 'out'}"],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert process.returncode == 0, process.stderr[-3000:]
  envelope = results.read(str(tmp_path / "out"), "volume_element")
  assert envelope["config"]["volume_resolution"] == 5
  metrics = envelope["payload"]["models"]["model"]["metrics"]
  assert (metrics["feature_width"], metrics["input_dim"], metrics["top_k"]) == (6, 3072, 6)
  (region,) = metrics["regions"]
  assert region["region"] == "plane 1" and region["examples"] == [0, 1, 2]
  assert -1 <= region["rank_correlation"] <= 1 and region["volume_ratio"] > 0
  assert np.isfinite(region["log10_volume"]["median"])
  assert (tmp_path / "out" / "analyses" / "volume_element" / "model" / "maps.png").exists()
  assert "Input-space volume element" in (tmp_path / "out" / "report.html").read_text()
