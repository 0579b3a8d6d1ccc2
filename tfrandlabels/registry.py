"""Named plug-ins of one kind (experiments, analyses), chosen by a flag."""
from typing import Generic, Tuple, TypeVar

from tfrandlabels.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
  """Items with a `name`, registered once each and looked up by `--FLAG=NAME`."""

  def __init__(self, kind: str, flag: str):
    self._kind, self._flag, self._items = kind, flag, {}

  def register(self, item: T) -> T:
    if item.name in self._items:
      raise ValueError(f"{self._kind} {item.name!r} is registered twice")
    self._items[item.name] = item
    return item

  def available(self) -> Tuple[str, ...]:
    return tuple(sorted(self._items))

  def get(self, name: str) -> T:
    if name not in self._items:
      raise ConfigError(f"--{self._flag}={name} is not one of {', '.join(self.available())}")
    return self._items[name]
