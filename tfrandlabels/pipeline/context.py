"""What every stage receives: the run's settings, its strategy, and whether to write."""
import dataclasses
import os
import types

import tensorflow as tf


@dataclasses.dataclass
class Context:
  """`cfg` holds the flags the experiment reads; only the chief writes shared outputs."""
  cfg: types.SimpleNamespace
  strategy: tf.distribute.Strategy
  chief: bool = True

  def path(self, *parts):
    return os.path.join(self.cfg.workdir, *parts)
