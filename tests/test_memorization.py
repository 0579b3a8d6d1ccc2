"""The trainer fits random labels (Zhang et al. 2017) and aligns the first layer with the
data (Maennel et al.): a network trained in full, 250 steps."""
import numpy as np
import tensorflow as tf

from tfrandlabels import data
from tfrandlabels import models
from tfrandlabels.analysis import alignment
from tfrandlabels.data import ops
from tfrandlabels.training import trainer


def test_memorizes_random_labels(embedded_dir, tmp_path):
  """Zhang et al. 2017: a network fits 500 images with random labels."""
  def random_labelled():
    return data.corrupt_labels(data.load("embedded", "train[:500]", data_dir=embedded_dir),
                               fraction=1.0, num_classes=10, seed=0)
  # simple_cnn with 96 filters and a narrower dense layer: the default 256 filters cost
  # twice as long; with 64 or fewer, Sigma_w is too close to singular for M to show it.
  build = lambda: models.build_model("simple_cnn", 10, (32, 32, 3), filters=96, hidden=32,
                                     seed=0)
  model, _ = trainer.train(
      model_fn=build,
      train_input=lambda start: data.make_input_fn(
          random_labelled, global_batch_size=100, training=True, start_step=start,
          batch_ops=[ops.normalize()]),
      eval_input=data.make_input_fn(
          lambda: data.load("embedded", "test[:500]", data_dir=embedded_dir),
          global_batch_size=100, training=False, batch_ops=[ops.normalize()]),
      config=trainer.TrainConfig(steps=250, batch_size=100, learning_rate=0.02,
                                 log_every=250, checkpoint_every=250, steps_per_loop=250),
      strategy=tf.distribute.get_strategy(), model_dir=str(tmp_path))
  def accuracy(ds):
    batches = list(ds.batch(250).as_numpy_iterator())
    return np.mean(np.concatenate([
        np.argmax(model.predict_on_batch(b["image"].astype(np.float32) / 255), -1) == b["label"]
        for b in batches]))
  assert accuracy(random_labelled()) >= 0.95
  test = data.load("embedded", "test[:500]", data_dir=embedded_dir)
  assert accuracy(test) < 0.2  # Chance is 0.1: random labels teach nothing.
  # Maennel et al.: even random labels align the first layer with the data's principal
  # components. At initialization both scores are alike; after training the score in
  # the data's eigenbasis is far below the one in random bases.
  images = np.stack([e["image"] for e in random_labelled().as_numpy_iterator()]) / 255.0
  _, sigma_x = alignment.patch_covariance(images.astype(np.float32), 3)

  def scores(network):
    sigma_w = alignment.filter_covariance(models.weight_layers(network)[0].kernel.numpy())
    return (alignment.misalignment(sigma_x, sigma_w),
            alignment.random_basis_misalignment(sigma_w, seed=0))

  initial, initial_random = scores(build())
  trained, trained_random = scores(model)
  assert initial > 0.8 * initial_random
  assert trained < 0.5 * trained_random
