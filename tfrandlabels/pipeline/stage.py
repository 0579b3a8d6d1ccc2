"""A stage of an experiment: one unit of work with declared inputs and outputs."""
import dataclasses
from typing import Callable, Tuple


@dataclasses.dataclass(frozen=True)
class Stage:
  """One step of an experiment's pipeline.

  Attributes:
    name: unique within the experiment; its record is workdir/stages/<name>.json.
    group: what `--stages` selects it by (several stages may share one, e.g. every
      analysis belongs to `analyze`).
    run: fn(ctx) that does the work; it may resume a partial run it finds.
    reads: the settings (flag names) its outputs depend on.
    after: stages whose outputs it reads; a redone input makes it stale.
    outputs: workdir-relative paths it owns (removed when it is redone).
    trains: expensive; if its settings changed, the run is refused unless --force
      (cheap stages are simply redone).
  """
  name: str
  group: str
  run: Callable
  reads: Tuple[str, ...] = ()
  after: Tuple[str, ...] = ()
  outputs: Tuple[str, ...] = ()
  trains: bool = False
