"""Data sources: TFDS (mocked cifar10), `embedded` for real, folders, bad input."""
import hashlib
import os

import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds
from PIL import Image

from conftest import write_tfds_metadata
from tfrandlabels import data


def _arrays(ds):
  return list(ds.as_numpy_iterator())


def test_cifar10_through_tfds_with_stable_indices(tmp_path):
  write_tfds_metadata("cifar10", str(tmp_path), {"train": 50000, "test": 10000})
  with tfds.testing.mock_data(num_examples=6, data_dir=str(tmp_path)):
    downstream = _arrays(data.load("cifar10", "train[25000:]", data_dir=str(tmp_path)))
    assert data.num_classes("cifar10", data_dir=str(tmp_path)) == 10
  assert [e["index"] for e in downstream] == list(range(25000, 25006))
  for e in downstream:
    assert e["image"].shape == (32, 32, 3) and e["image"].dtype == np.uint8
    assert 0 <= e["label"] < 10


@pytest.fixture(scope="module")
def embedded(embedded_dir):
  train = _arrays(data.load("embedded", "train", data_dir=embedded_dir))
  test = _arrays(data.load("embedded", "test", data_dir=embedded_dir))
  return train, test


def test_embedded_is_a_real_classification_set(embedded):
  train, test = embedded
  assert len(train) >= 5000 and len(test) >= 1000
  assert [e["index"] for e in train] == list(range(len(train)))
  for split in (train, test):
    labels = np.array([e["label"] for e in split])
    assert set(labels) == set(range(10))
    assert np.bincount(labels).min() >= len(split) // 20
  assert all(e["image"].shape == (32, 32, 3) and e["image"].dtype == np.uint8 for e in train)


def test_embedded_splits_share_no_image(embedded):
  train, test = embedded
  digests = [{hashlib.sha1(e["image"].tobytes()).digest() for e in split} for split in embedded]
  assert len(digests[0]) == len(train) and len(digests[1]) == len(test)
  assert not digests[0] & digests[1]


def test_embedded_power_spectrum_falls_off_like_natural_images(embedded):
  images = np.stack([e["image"] for e in embedded[0][:2000]]).astype(np.float64).mean(-1)
  images -= images.mean(axis=(1, 2), keepdims=True)
  power = (np.abs(np.fft.fftshift(np.fft.fft2(images), axes=(1, 2))) ** 2).mean(0)
  y, x = np.indices(power.shape) - 16
  radius = np.rint(np.hypot(y, x)).astype(int)
  profile = np.array([power[radius == r].mean() for r in range(1, 16)])
  assert np.all(np.diff(np.log(profile)) < 0.1)  # Falls, barring tiny wiggles.
  slope = np.polyfit(np.log(np.arange(1, 16)), np.log(profile), 1)[0]
  assert slope < -1.5  # Natural images: power ~ 1/f^2; white noise would be flat.


def test_embedded_is_deterministic(embedded_dir, embedded):
  again = _arrays(data.load("embedded", "test[:50]", data_dir=embedded_dir))
  for a, b in zip(again, embedded[1][:50]):
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["label"] == b["label"] and a["index"] == b["index"]


def _write_folder(root, split, classes, per_class):
  rng = np.random.default_rng(0)
  for name in classes:
    os.makedirs(root / split / name)
    for i in range(per_class):
      pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_folder_of_images(tmp_path):
  _write_folder(tmp_path, "train", ["cat", "dog", "eel"], 3)
  examples = _arrays(data.load(f"folder:{tmp_path}", "train"))
  assert len(examples) == 9
  assert sorted(e["index"] for e in examples) == list(range(9))
  assert np.bincount([e["label"] for e in examples]).tolist() == [3, 3, 3]
  assert examples[0]["image"].shape == (8, 8, 3)


@pytest.mark.parametrize("name, split, message", [
    ("no_such_set", "train", "name='no_such_set' is not a known data set"),
    ("embedded", "train[1:2:3]", "split='train[1:2:3]' is not a valid split"),
    ("embedded", "validation", "has no split 'validation'"),
    ("imagenet2012", "train", "needs a manual download: put the files in"),
])
def test_bad_input_is_refused_without_writing(tmp_path, name, split, message):
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
    data.load(name, split, data_dir=str(data_dir))
  assert not list(data_dir.rglob("*.tfrecord*"))
  assert not list(data_dir.rglob("dataset_info.json"))


def test_bad_folders(tmp_path):
  with pytest.raises(ValueError, match="no such directory"):
    data.load(f"folder:{tmp_path / 'missing'}", "train")
  (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
  with pytest.raises(ValueError, match="no image files"):
    data.load(f"folder:{tmp_path / 'empty'}", "train")
  _write_folder(tmp_path / "broken", "train", ["cat"], 1)
  (tmp_path / "broken" / "train" / "cat" / "bad.png").write_bytes(b"not an image")
  with pytest.raises(ValueError, match="bad.png is not a readable image"):
    data.load(f"folder:{tmp_path / 'broken'}", "train")


def test_a_download_that_fails_is_one_line(tmp_path, monkeypatch):
  """What TFDS raises offline (requests' ConnectionError) names the set and the remedy."""
  def offline(self, *args, **kwargs):
    raise requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='www.cs.toronto.edu', port=443): Max retries exceeded\n"
        "(Caused by NameResolutionError(...))")
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
  with pytest.raises(ValueError) as error:
    data.load("cifar10", "train", data_dir=str(tmp_path))
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith("name='cifar10' could not be downloaded (HTTPSConnectionPool")
  assert "--data_dir=DIR" in message and "--dataset=embedded" in message
  assert not list(tmp_path.rglob("*.tfrecord*"))
