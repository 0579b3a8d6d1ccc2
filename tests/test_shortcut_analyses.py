"""The frequency-shortcut analyses on a tiny model, against direct computations with the
spectra functions; the shift ops and the learning-order hook; analyze.py on a saved
model."""
import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrandlabels.analyses import class_spectra
from tfrandlabels.analyses import dominant_frequencies
from tfrandlabels.analyses import shortcut_test
from tfrandlabels.analyses.registry import AnalysisData
from tfrandlabels.analysis import spectra
from tfrandlabels.data import frequency
from tfrandlabels.data import ops
from tfrandlabels.training import hooks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES, PER_CLASS, SIZE = 3, 6, 8


@pytest.fixture(scope="module")
def examples():
  """(uint8 images, labels): random 8x8 images, classes interleaved."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (CLASSES * PER_CLASS, SIZE, SIZE, 3)).astype(np.uint8)
  return images, np.arange(CLASSES * PER_CLASS) % CLASSES


def make_data(images, labels, batch_ops=None):
  def source():
    return tf.data.Dataset.from_tensor_slices({
        "image": images, "label": labels.astype(np.int64),
        "index": np.arange(len(labels), dtype=np.int64)})
  return AnalysisData(dataset="random", split="test", source=source,
                      batch_ops=batch_ops or ops.image_ops(mean=None, std=None),
                      batch_size=5, num_classes=CLASSES)


@pytest.fixture(scope="module")
def model():
  keras.utils.set_random_seed(3)
  inputs = keras.Input((SIZE, SIZE, 3))
  hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
  hidden = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(hidden)
  return keras.Model(inputs, keras.layers.Dense(CLASSES)(keras.layers.Flatten()(hidden)))


def settings(**overrides):
  values = dict(dominant_frequencies_top_fraction=0.1, dominant_frequencies_images=4,
                dominant_frequencies_batch=64, shortcut_test_min_tpr=0.5,
                shortcut_test_max_fpr=0.2, shortcut_test_shifts=["contrast:0.5"],
                shortcut_test_ood_datasets=[], shortcut_test_ood_split="test",
                shortcut_test_seed=0, data_dir=None)
  return types.SimpleNamespace(**{**values, **overrides})


def direct_dfms(model, images, labels, fraction, per_class):
  inputs = images.astype(np.float32) / 255
  return np.stack([spectra.dominant_frequency_map(spectra.frequency_importance(
      lambda x: model(x, training=False), inputs[labels == c][:per_class], c), fraction)
                   for c in range(CLASSES)])


def test_class_spectra_equal_the_spectra_functions(examples, model):
  images, labels = examples
  output = class_spectra.run(model, make_data(images, labels), settings())
  means = spectra.class_mean_spectra([{"image": images / 255.0, "label": labels}], CLASSES)
  np.testing.assert_allclose(output.metrics["mean_spectra"], means, rtol=1e-5)
  np.testing.assert_array_equal(output.metrics["adcs"], spectra.adcs(means))
  assert output.metrics["dataset"] == "random" and "adcs" in output.plots


def test_dominant_frequencies_equal_a_direct_search(examples, model):
  images, labels = examples
  output = dominant_frequencies.run(model, make_data(images, labels), settings())
  expected = direct_dfms(model, images, labels, 0.1, 4)
  assert output.metrics["outputs"] == "logits"
  for c, entry in enumerate(output.metrics["classes"]):
    assert entry["images"] == 4
    np.testing.assert_array_equal(entry["dfm"], np.argwhere(expected[c]))
    assert entry["size"] == expected[c].sum() and "in_band_fraction" not in entry


def test_a_softmax_model_gets_the_dfms_of_its_logits(examples, model):
  images, labels = examples
  softmax = keras.Model(model.input, keras.layers.Softmax()(model.output))
  data = make_data(images, labels)
  from_logits = dominant_frequencies.class_dfms(model, data, top_fraction=0.1, images=4,
                                                batch=64)
  from_probabilities = dominant_frequencies.class_dfms(softmax, data, top_fraction=0.1,
                                                       images=4, batch=64)
  assert (from_logits.outputs, from_probabilities.outputs) == ("logits", "probabilities")
  np.testing.assert_array_equal(from_probabilities.dfms, from_logits.dfms)
  assert dominant_frequencies.outputs_probabilities([[0.2, 0.8], [1.0, 0.0]])
  assert not dominant_frequencies.outputs_probabilities([[0.2, 0.9]])
  assert not dominant_frequencies.outputs_probabilities([[-0.5, 1.5]])


def test_split_first_convolution_composes_to_the_model():
  keras.utils.set_random_seed(14)
  x = np.random.default_rng(15).normal(size=(3, 8, 8, 3)).astype(np.float32)
  sequential = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                                 keras.layers.BatchNormalization(), keras.layers.ReLU(),
                                 keras.layers.Flatten(), keras.layers.Dense(2)])
  sequential(x, training=True)  # moving statistics away from their initial values
  inputs = keras.Input((8, 8, 3))
  relu_conv = keras.layers.Conv2D(4, 3, activation="relu", use_bias=False)(inputs)
  functional = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(relu_conv)))
  for model in (sequential, functional):
    stem, head = dominant_frequencies.split_first_convolution(model)
    np.testing.assert_allclose(head(stem(x)), model(x, training=False), rtol=1e-5, atol=1e-6)
    # The stem is affine: stem(a x + b y) = a stem(x) + b stem(y) + (1 - a - b) stem(0).
    zero = stem(np.zeros_like(x[:1]))
    np.testing.assert_allclose(stem(2 * x[:1] - 3 * x[1:2]),
                               2 * stem(x[:1]) - 3 * stem(x[1:2]) + 2 * zero, atol=1e-5)
  two_consumers = keras.Model(inputs, keras.layers.Add()([
      keras.layers.Conv2D(4, 3)(inputs), keras.layers.Conv2D(4, 3)(inputs)]))
  dense_first = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                                  keras.layers.Dense(2)])
  for model in (two_consumers, dense_first):
    assert dominant_frequencies.split_first_convolution(model) is None


def test_shortcut_test_equals_filtering_image_by_image(examples, model):
  images, labels = examples
  output = shortcut_test.run(model, make_data(images, labels), settings())
  dfms = direct_dfms(model, images, labels, 0.1, 4)
  shifted = tf.clip_by_value(tf.image.adjust_contrast(tf.cast(images, tf.float32), 0.5), 0, 255)
  for name, pixels in (("in_distribution", images.astype(np.float32)),
                       ("contrast:0.5", shifted.numpy())):
    result = output.metrics["sources"][name]
    unfiltered = np.argmax(model(pixels / 255), -1)
    assert result["accuracy"] == pytest.approx(np.mean(unfiltered == labels))
    for c in range(CLASSES):
      kept = frequency.apply_mask(pixels / 255, dfms[c].astype(np.float32))
      tpr, fpr = spectra.shortcut_rates(model(kept), labels, CLASSES)
      assert result["tpr"][c] == pytest.approx(tpr[c]) and result["fpr"][c] == pytest.approx(
          fpr[c])
      assert result["shortcut"][c] == bool(tpr[c] >= 0.5 and fpr[c] <= 0.2)
  section = shortcut_test.section({"data": {}, "models": {"m": {"metrics": output.metrics}}},
                                  {"m": []})
  text = " ".join(b for b in section.blocks if isinstance(b, str))
  assert "class 0" in text and "TPR" in text


def test_shift_ops_noise_blur_contrast():
  batch = {"image": np.full((2, 8, 8, 3), 100, np.uint8), "index": np.array([3, 4])}
  noisy = ops.distribution_shift("noise:0.1", seed=1)(batch)["image"].numpy()
  again = ops.distribution_shift("noise:0.1", seed=1)(
      {"image": batch["image"][::-1], "index": batch["index"][::-1]})["image"].numpy()
  np.testing.assert_array_equal(noisy, again[::-1])  # Keyed by (seed, index).
  assert 15 < np.std(noisy - 100) < 35
  flat = ops.distribution_shift("blur:1.5")(batch)["image"].numpy()
  np.testing.assert_allclose(flat, 100, atol=1e-3)
  edge = np.zeros((1, 8, 8, 1), np.uint8)
  edge[:, :, 4:] = 200
  blurred = ops.distribution_shift("blur:1")({"image": edge, "index": [0]})["image"].numpy()
  assert 0 < blurred[0, 0, 3, 0] < 100 < blurred[0, 0, 4, 0] < 200
  contrast = ops.distribution_shift("contrast:0.5")({"image": edge, "index": [0]})["image"]
  np.testing.assert_allclose(contrast.numpy()[0, 0, [0, 7], 0], [50, 150], atol=1e-3)
  for bad in ("noise:2", "blur:0", "tint:1", "contrast:x"):
    with pytest.raises(ValueError, match="must be noise:STD"):
      ops.parse_shift(bad)


def test_filtered_accuracy_hook_matches_filtering_directly(examples, model):
  images, labels = examples
  inputs = images.astype(np.float32) / 255
  hook = hooks.FilteredAccuracyHook(inputs, labels, ["low_pass:2", "high_pass:2"],
                                    batch_size=7, name="order")
  values = hook(10, model)
  assert set(values) == {"unfiltered", "low_pass_2", "high_pass_2"}
  for key, mask in (("unfiltered", np.ones((SIZE, SIZE))),
                    ("low_pass_2", frequency.low_pass(SIZE, 2)),
                    ("high_pass_2", frequency.high_pass(SIZE, 2))):
    predicted = np.argmax(model(frequency.apply_mask(inputs, mask)), -1)
    assert values[key] == pytest.approx(np.mean(predicted == labels))


def test_analyze_writes_the_three_analyses_for_a_saved_softmax_model(planted_dir, tmp_path):
  keras.utils.set_random_seed(2)
  inputs = keras.Input((32, 32, 3))
  hidden = keras.layers.Conv2D(4, 5, strides=2, activation="relu")(inputs)
  outputs = keras.layers.Dense(10, activation="softmax")(
      keras.layers.GlobalAveragePooling2D()(hidden))
  keras.Model(inputs, outputs).save(tmp_path / "mine.keras")
  process = subprocess.run(
      [sys.executable, os.path.join(REPO, "pipelines", "analyze.py"),
       f"--model_path={tmp_path / 'mine.keras'}", "--dataset=planted_high",
       f"--data_dir={planted_dir}", "--split=test[:100]", "--batch_size=50",
       "--analyses=class_spectra,dominant_frequencies,shortcut_test",
       "--dominant_frequencies_images=2", "--shortcut_test_shifts=blur:1",
       "--shortcut_test_ood_datasets=planted_mid", "--shortcut_test_ood_split=test[:100]",
       f"--workdir={tmp_path / 'out'}"],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert process.returncode == 0, process.stderr[-3000:]
  metrics = {name: json.loads((tmp_path / "out" / "results" / f"{name}.json").read_text())
             ["payload"]["models"]["model"]["metrics"]
             for name in ("class_spectra", "dominant_frequencies", "shortcut_test")}
  assert np.asarray(metrics["class_spectra"]["adcs"]).shape == (10, 32, 32, 3)
  dfm = metrics["dominant_frequencies"]
  assert dfm["outputs"] == "probabilities"
  assert all(0 <= c["in_band_fraction"] <= 1 and c["images"] == 2 for c in dfm["classes"])
  sources = metrics["shortcut_test"]["sources"]
  assert set(sources) == {"in_distribution", "blur:1", "planted_mid"}
  assert sources["planted_mid"]["images"] == 100 and len(sources["blur:1"]["tpr"]) == 10
  assert (tmp_path / "out" / "report.html").exists()
