"""An HTML report made of sections: one self-contained file plus its figures.

`render` knows nothing about any experiment. Each experiment or analysis contributes
`Section`s: a title, sentences for the report's opening summary, and blocks in reading
order (paragraphs, `Table`s and `Plot`s). The page opens with its title and a Summary
that collects every section's sentences, shows the sections in order, and ends with the
run's configuration, collapsed.

The page is a single file: every figure is embedded as a base64 data URI (and also saved
as `<workdir>/figures/NAME.png`), and nothing is loaded from elsewhere (no scripts, style
sheets or images), so it can be mailed or opened from a bucket as it is. All text is
HTML-escaped.

Figures are matplotlib `Figure`s on an explicit Agg canvas (`new_figure`), never pyplot:
drawing is headless, needs no backend setting and leaves no figure open in pyplot's
global registry.
"""
import base64
import dataclasses
import html
import json
import os
import re
from io import BytesIO
from typing import List, Mapping, Sequence, Union

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfrandlabels import io

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PLOT_NAME = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")
_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f2f2f2; }
.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
figure img { max-width: 100%; }
figcaption { color: #555; font-size: 0.92em; }
details { margin: 2em 0 1em; }
summary { cursor: pointer; font-weight: bold; }
"""


def _check_sequence(value, what: str) -> None:
  """Raises a ValueError unless `value` is a sequence other than a str (a common slip)."""
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    raise ValueError(f"{what} must be a list or tuple, got {type(value).__name__} "
                     f"{value!r:.60}.")


@dataclasses.dataclass(frozen=True)
class Table:
  """A table: each cell is shown as str(cell); columns listed in `numeric` align right."""
  header: Sequence[str]
  rows: Sequence[Sequence[object]]
  numeric: Sequence[int] = ()

  def __post_init__(self):
    _check_sequence(self.header, "Table.header")
    _check_sequence(self.rows, "Table.rows")
    for index, row in enumerate(self.rows):
      _check_sequence(row, f"Table.rows[{index}]")
      if len(row) != len(self.header):
        raise ValueError(f"Table.rows[{index}] has {len(row)} cells but the header "
                         f"{list(self.header)} has {len(self.header)}.")
    _check_sequence(self.numeric, "Table.numeric")
    for column in self.numeric:
      if column not in range(len(self.header)):
        raise ValueError(f"Table.numeric: column {column!r} is not an index of the header "
                         f"(0 to {len(self.header) - 1}).")


@dataclasses.dataclass(frozen=True)
class Plot:
  """A figure: PNG bytes (see `figure_png`) saved as figures/NAME.png, with a caption."""
  name: str
  caption: str
  png: bytes

  def __post_init__(self):
    if not (isinstance(self.name, str) and _PLOT_NAME.fullmatch(self.name)):
      raise ValueError(f"Plot.name {self.name!r} must be letters, digits, '_' or '-', with "
                       "'/' between folder names (e.g. 'alignment/misalignment'); it is "
                       "saved as figures/NAME.png.")
    if not (isinstance(self.png, bytes) and self.png.startswith(PNG_SIGNATURE)):
      raise ValueError(f"Plot.png of {self.name!r} must be the bytes of a PNG file; draw "
                       "the figure with report.new_figure and pass report.figure_png(figure).")


Block = Union[str, Table, Plot]


@dataclasses.dataclass(frozen=True)
class Section:
  """A part of the report: summary sentences, then paragraphs, tables and plots in order."""
  title: str
  summary: Sequence[str] = ()
  blocks: Sequence[Block] = ()

  def __post_init__(self):
    _check_sequence(self.summary, f"Section {self.title!r}: summary")
    _check_sequence(self.blocks, f"Section {self.title!r}: blocks")
    for index, block in enumerate(self.blocks):
      if not isinstance(block, (str, Table, Plot)):
        raise ValueError(f"Section {self.title!r}: blocks[{index}] must be a paragraph (str), "
                         f"a Table or a Plot, got {type(block).__name__}.")


def new_figure(width: float, height: float) -> Figure:
  """A matplotlib Figure of `width` x `height` inches on its own Agg canvas, not pyplot's."""
  figure = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(figure)
  return figure


def figure_png(figure: Figure) -> bytes:
  """The bytes of a PNG file of `figure` at 110 dpi, cropped to what is drawn."""
  buffer = BytesIO()
  figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
  return buffer.getvalue()


def _text(value) -> str:
  """HTML-escaped str(value)."""
  return html.escape(str(value), quote=True)


def _row(tag: str, cells: Sequence[object], numeric: Sequence[int]) -> str:
  return "<tr>" + "".join(
      (f'<{tag} class="number">' if index in numeric else f"<{tag}>") + f"{_text(cell)}</{tag}>"
      for index, cell in enumerate(cells)) + "</tr>"


def _table_html(table: Table) -> str:
  return ("<table>" + _row("th", table.header, table.numeric)
          + "".join(_row("td", row, table.numeric) for row in table.rows) + "</table>")


def _plot_html(plot: Plot) -> str:
  encoded = base64.b64encode(plot.png).decode("ascii")
  return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{_text(plot.name)}">'
          f"<figcaption>{_text(plot.caption)}</figcaption></figure>")


def _block_html(block: Block) -> str:
  if isinstance(block, Table):
    return _table_html(block)
  if isinstance(block, Plot):
    return _plot_html(block)
  return f"<p>{_text(block)}</p>"


def _summary_html(sections: Sequence[Section]) -> str:
  """Every section's summary sentences as one list, in section order; '' if none."""
  items = "".join(f"<li>{_text(sentence)}</li>"
                  for section in sections for sentence in section.summary)
  return f"<h2>Summary</h2><ul>{items}</ul>" if items else ""


def _section_html(section: Section) -> str:
  return f"<h2>{_text(section.title)}</h2>" + "".join(map(_block_html, section.blocks))


def _config_html(config: Mapping[str, object]) -> str:
  """The flags as a collapsed table; values JSON-encoded unless they are str."""
  rows = [(flag, value if isinstance(value, str) else json.dumps(value, default=str))
          for flag, value in sorted(config.items(), key=lambda item: str(item[0]))]
  label = f"Configuration ({len(rows)} flag{'' if len(rows) == 1 else 's'})"
  return (f"<details><summary>{_text(label)}</summary>"
          f"{_table_html(Table(('flag', 'value'), rows))}</details>")


def _plots(sections: Sequence[Section]) -> List[Plot]:
  """The plots of all sections, in order; raises a ValueError on a repeated name."""
  plots = {}
  for section in sections:
    for plot in (block for block in section.blocks if isinstance(block, Plot)):
      if plot.name in plots:
        raise ValueError(f"sections: plot name {plot.name!r} is used in section "
                         f"{plots[plot.name][0]!r} and again in {section.title!r}; each "
                         "plot needs its own name (it is saved as figures/NAME.png).")
      plots[plot.name] = (section.title, plot)
  return [plot for _, plot in plots.values()]


def render(workdir: str, *, title: str, sections: Sequence[Section],
           config: Mapping[str, object]) -> str:
  """Writes `<workdir>/report.html` and every plot to `<workdir>/figures/NAME.png`.

  Args:
    workdir: the run's folder (local, gs:// or ram://).
    title: the page's heading.
    sections: the parts of the report, in reading order; their summary sentences open
      the page, under "Summary".
    config: flag -> value of the run, shown last in a collapsed table.

  Returns:
    The path of report.html. Nothing is written if an argument is invalid.
  """
  _check_sequence(sections, "sections")
  for index, section in enumerate(sections):
    if not isinstance(section, Section):
      raise ValueError(f"sections[{index}] must be a report.Section, got "
                       f"{type(section).__name__}.")
  if not isinstance(config, Mapping):
    raise ValueError(f"config must map flag names to values, got {type(config).__name__}.")
  plots = _plots(sections)
  page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f"<title>{_text(title)}</title><style>{_STYLE}</style></head><body>"
          f"<h1>{_text(title)}</h1>{_summary_html(sections)}"
          f"{''.join(map(_section_html, sections))}{_config_html(config)}</body></html>\n")
  for plot in plots:
    io.atomic_write(os.path.join(workdir, "figures", f"{plot.name}.png"), plot.png)
  path = os.path.join(workdir, "report.html")
  io.atomic_write(path, page)
  return path
