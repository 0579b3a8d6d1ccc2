"""Transfer variants: rescaling to initial norms, exact copies, covariance sampling."""
import numpy as np
import pytest

from conftest import parse_flagfile
from tfrandlabels import models
from tfrandlabels.analysis import alignment
from tfrandlabels.experiments import common
from tfrandlabels.training import transfer


@pytest.fixture(scope="module")
def pair():
  """A 'pretrained' model with structured filters and its fresh counterpart's init."""
  pretrained = models.build_model("simple_cnn", 10, (12, 12, 3), hidden=8, seed=1)
  rng = np.random.default_rng(0)
  mixing = rng.normal(size=(27, 27)) * np.linspace(0.1, 2.0, 27)
  conv1 = models.weight_layers(pretrained)[0]
  conv1.kernel.assign((mixing @ rng.normal(size=(27, 256))).reshape(3, 3, 3, 256) * 0.3 + 0.05)
  conv1.bias.assign(rng.normal(size=256))
  return pretrained


def _fresh(seed=5):
  return models.build_model("simple_cnn", 10, (12, 12, 3), hidden=8, seed=seed)


def test_pretrained_is_rescaled_to_the_initial_norm(pair):
  fresh = _fresh()
  initial = [layer.kernel.numpy() for layer in models.weight_layers(fresh)]
  transfer.apply_transfer(fresh, pair, "pretrained", 2)
  for i in range(2):
    got = models.weight_layers(fresh)[i].kernel.numpy()
    source = models.weight_layers(pair)[i].kernel.numpy()
    assert np.linalg.norm(got) == pytest.approx(np.linalg.norm(initial[i]), rel=1e-5)
    # Same direction as the pretrained kernel: a positive multiple of it.
    scale = np.linalg.norm(got) / np.linalg.norm(source)
    np.testing.assert_allclose(got, source * scale, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(models.weight_layers(fresh)[i].bias.numpy(),
                               models.weight_layers(pair)[i].bias.numpy() * scale, rtol=1e-5)
  np.testing.assert_array_equal(models.weight_layers(fresh)[2].kernel.numpy(), initial[2])


def test_no_rescaling_copies_exactly_and_scratch_copies_nothing(pair):
  fresh = transfer.apply_transfer(_fresh(), pair, "no_rescaling", 1)
  np.testing.assert_array_equal(models.weight_layers(fresh)[0].kernel.numpy(),
                                models.weight_layers(pair)[0].kernel.numpy())
  untouched = _fresh()
  before = untouched.get_weights()
  transfer.apply_transfer(untouched, pair, "scratch", 1)
  for a, b in zip(before, untouched.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_covariance_filters_have_the_pretrained_covariance(pair):
  sigma_w = alignment.filter_covariance(models.weight_layers(pair)[0].kernel.numpy())
  estimates = []
  for seed in range(8):
    fresh = transfer.apply_transfer(_fresh(), pair, "covariance", 1, seed=seed)
    kernel = models.weight_layers(fresh)[0].kernel.numpy()
    samples = kernel.reshape(-1, 256).T
    # Zero-mean draws: the second moment estimates Sigma_w without a mean term.
    estimates.append(samples.T @ samples / 256)
    assert np.all(models.weight_layers(fresh)[0].bias.numpy() == 0)
  relative = np.linalg.norm(np.mean(estimates, 0) - sigma_w) / np.linalg.norm(sigma_w)
  assert relative < 0.1  # 2,048 draws in 27 dimensions.
  single = np.linalg.norm(estimates[0] - sigma_w) / np.linalg.norm(sigma_w)
  assert single < 0.3
  # The draws are not the pretrained filters themselves.
  assert not np.allclose(kernel, models.weight_layers(pair)[0].kernel.numpy())


def test_sample_filters_against_a_closed_form():
  sigma = np.diag([4.0, 1.0, 0.25])
  kernel = transfer.sample_filters(sigma, (3, 40000), np.random.default_rng(0))
  np.testing.assert_allclose(np.cov(kernel), sigma, atol=0.05)


@pytest.mark.parametrize("variant, k, message", [
    ("pretrained", 3, "k=3 must be between 1 and 2"),
    ("pretrained", 0, "k=0 must be between 1 and 2"),
    ("covariance", 2, "variant covariance would need Sigma_w of layer 'dense1'"),
    ("mixup", 1, "variant='mixup' is not one of"),
])
def test_bad_transfer(pair, variant, k, message):
  with pytest.raises(ValueError, match=message):
    transfer.apply_transfer(_fresh(), pair, variant, k)


def test_model_options_reach_the_builder(embedded_dir):
  _, cfg = parse_flagfile("quick.cfg", f"--data_dir={embedded_dir}",
                          "--model_options=filters=8,hidden=4")
  model = common.build(cfg, 10, 0, (32, 32, 3))
  conv, dense, _ = models.weight_layers(model)
  assert conv.kernel.shape == (3, 3, 3, 8) and dense.kernel.shape == (30 * 30 * 8, 4)
  assert common.parse_model_options("widths=16/32,rate=0.5") == {"widths": (16, 32),
                                                                 "rate": 0.5}
