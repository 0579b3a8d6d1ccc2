"""The model registry and the conventions every model family shares.

A model family is one function decorated with `@register("name")`. It takes
`(num_classes, input_shape, layers, **options)`, where `layers` is a
`LayerFactory` that builds the weight-carrying layers (so that initialization,
seeding and the float32 logits are decided in one place), and returns a Keras 3
functional model that outputs logits. `build_model` validates everything a user
passes before a builder runs, so a typo fails with the name of the argument.
"""
import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Sequence

import keras

MODELS: dict[str, Callable[..., keras.Model]] = {}

# Options every model accepts; `build_model` turns them into the LayerFactory.
COMMON_OPTIONS = ("init_scale", "seed")


def register(name: str) -> Callable[[Callable[..., keras.Model]], Callable[..., keras.Model]]:
  """Returns a decorator that registers a model builder under `name`.

  Args:
    name: the name `build_model` looks the builder up by.

  Returns:
    A decorator that stores the builder in `MODELS` and returns it unchanged.
  """
  def decorator(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
    if name in MODELS:
      raise ValueError(f"model={name!r} is already registered; pick another name.")
    MODELS[name] = builder
    return builder
  return decorator


def available_models() -> tuple[str, ...]:
  """Returns the registered model names, sorted."""
  return tuple(sorted(MODELS))


def build_model(name: str, num_classes: int, input_shape: Sequence[int],
                **kwargs) -> keras.Model:
  """Builds a registered model that maps images to float32 logits.

  Args:
    name: a registered model name (see `available_models()`).
    num_classes: number of logits the model outputs.
    input_shape: shape of one example without the batch axis, e.g. (32, 32, 3).
    **kwargs: `init_scale` (float > 0, default 1.0: multiplier on the He-normal
      standard deviation of every kernel), `seed` (int >= 0 or None: equal seeds
      give identical initial weights) and the model's own options, listed in
      its builder's signature.

  Returns:
    A functional `keras.Model` that maps a batch to float32 logits `[batch, num_classes]`.
  """
  if name not in MODELS:
    raise ValueError(f"model={name!r} is not registered; allowed: {', '.join(available_models())}.")
  builder = MODELS[name]
  own_options = [p.name for p in inspect.signature(builder).parameters.values()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY]
  allowed = sorted([*COMMON_OPTIONS, *own_options])
  for key in kwargs:
    if key not in allowed:
      raise ValueError(f"{key}: unknown option for model={name!r}; allowed: {', '.join(allowed)}.")
  check_positive_int("num_classes", num_classes)
  input_shape = tuple(input_shape) if isinstance(input_shape, Iterable) else (input_shape,)
  if not input_shape or not all(_is_int(d) and d > 0 for d in input_shape):
    raise ValueError(f"input_shape={input_shape!r} must be a non-empty sequence of positive ints.")
  input_shape = tuple(int(d) for d in input_shape)
  layers = LayerFactory(init_scale=kwargs.pop("init_scale", 1.0), seed=kwargs.pop("seed", None))
  return builder(num_classes, input_shape, layers, **kwargs)


def weight_layers(model: keras.Model) -> list[keras.layers.Layer]:
  """Returns the layers that carry a kernel (Conv2D, Dense), in forward order.

  Forward order is the topological order of the functional graph, which for
  the models here is the order the layers are created in: `weight_layers(m)[0]`
  is the first convolution (or dense) layer and `[:k]` are the first k.

  Args:
    model: a functional Keras model.

  Returns:
    The Conv2D and Dense layers of `model`.
  """
  return [layer for layer in model.layers
          if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


class LayerFactory:
  """Builds the weight-carrying layers of one model with a shared init scheme.

  Every kernel is drawn from
  `VarianceScaling(scale=2 * init_scale**2, mode="fan_in", distribution="untruncated_normal")`,
  i.e. N(0, (init_scale * sqrt(2 / fan_in))**2): He initialization with its
  standard deviation multiplied by `init_scale`. The normal is untruncated so
  that the empirical std is exactly proportional to `init_scale` (Maennel et
  al. vary the init scale and compare). Biases start at zero. With an integer
  `seed`, the i-th weight layer created gets the seed `seed + i`, so two
  builds with the same seed give identical weights while layers of one model
  get independent draws.
  """

  def __init__(self, init_scale: float = 1.0, seed: int | None = None):
    if isinstance(init_scale, bool) or not isinstance(init_scale, (int, float)) or not (
        math.isfinite(init_scale) and init_scale > 0):
      raise ValueError(f"init_scale={init_scale!r} must be a finite number > 0.")
    if seed is not None and not (_is_int(seed) and seed >= 0):
      raise ValueError(f"seed={seed!r} must be None or an int >= 0.")
    self.init_scale = float(init_scale)
    self.seed = None if seed is None else int(seed)
    self._created = 0

  def kernel_initializer(self) -> keras.initializers.Initializer:
    """Returns the initializer for the next weight layer's kernel."""
    seed = None if self.seed is None else self.seed + self._created
    self._created += 1
    return keras.initializers.VarianceScaling(
        scale=2.0 * self.init_scale**2, mode="fan_in",
        distribution="untruncated_normal", seed=seed)

  def conv2d(self, filters: int, kernel_size: int, name: str, *, strides: int = 1,
             padding: str = "same", use_bias: bool = True,
             activation: str | None = None) -> keras.layers.Conv2D:
    """Returns a Conv2D layer initialized by this factory."""
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
        activation=activation, kernel_initializer=self.kernel_initializer(),
        bias_initializer="zeros", name=name)

  def dense(self, units: int, name: str, *, activation: str | None = None) -> keras.layers.Dense:
    """Returns a Dense layer initialized by this factory."""
    return keras.layers.Dense(
        units, activation=activation, kernel_initializer=self.kernel_initializer(),
        bias_initializer="zeros", name=name)

  def logits(self, num_classes: int) -> keras.layers.Dense:
    """Returns the final linear layer, named `logits`.

    It computes in float32 even under a mixed-precision policy, so losses and
    the analysis always see float32 logits.
    """
    return keras.layers.Dense(
        num_classes, kernel_initializer=self.kernel_initializer(),
        bias_initializer="zeros", dtype="float32", name="logits")


def image_input(input_shape: tuple[int, ...], min_side: int = 1) -> keras.KerasTensor:
  """Returns the model input for images `[H, W, C]`, checking their size.

  Args:
    input_shape: (height, width, channels).
    min_side: the smallest height and width the model can process.

  Returns:
    A `keras.Input` named `image`.
  """
  if len(input_shape) != 3 or min(input_shape[:2]) < min_side:
    raise ValueError(
        f"input_shape={input_shape!r} must be (height, width, channels) with height and "
        f"width >= {min_side} for this model.")
  return keras.Input(shape=input_shape, name="image")


def check_positive_int(name: str, value) -> None:
  """Raises a ValueError naming `name` unless `value` is an int >= 1."""
  if not (_is_int(value) and value >= 1):
    raise ValueError(f"{name}={value!r} must be an int >= 1.")


def check_choice(name: str, value, allowed: Sequence) -> None:
  """Raises a ValueError naming `name` unless `value` is one of `allowed`."""
  if value not in allowed:
    raise ValueError(f"{name}={value!r} is not allowed; allowed: {', '.join(map(str, allowed))}.")


def _is_int(value) -> bool:
  """True for Python and NumPy integers, False for bools (an easy typo for a flag)."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)
