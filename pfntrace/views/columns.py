"""Tables that fit a terminal's width without cutting what matters.

rich's Table shrinks every column to fit, so at 80 columns numbers and
headers became "1…" and "MISS…".  Here the table is laid out by hand:
every column keeps its full width (a number is never cut), the columns of
lowest priority are left out until the rest fit, and the one flexible
column (a path) takes what is left, keeping its tail: the file name
(lines(), for top's one screen).  Where every row must be read whole (the
report), hanging() keeps all columns and wraps the last one instead.
"""

from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text

from pfntrace.views.wrap import lay_out, words

GAP = "  "
HEAD_ELLIPSIS = "…"


@dataclass
class Column:
    name: str
    priority: int            # lower is more important; the highest go first
    justify: str = "right"
    flex: bool = False       # takes the remaining width, cut at its head
    min_width: int = 12      # a flexible column is never narrower


def keep_tail(text, width):
    """text in at most `width` cells: whole when it fits, else '…' and its
    last width-1 cells (a path keeps its file name)."""
    if cell_len(text) <= width:
        return text
    out = ""
    for ch in reversed(text):
        if cell_len(ch + out) > width - 1:
            break
        out = ch + out
    return HEAD_ELLIPSIS + out


def fit(columns, rows, width, protect=3):
    """(columns kept in their order, their widths) for rows of cells
    (str, or (str, style)) so that a line is at most `width` cells.

    A whole path is worth more than the columns of priority above `protect`:
    those leave first; only then is the path cut at its head (down to its
    min_width), and only then do the others leave."""
    natural = {}
    for i, col in enumerate(columns):
        cells = [_text(r[i]) for r in rows]
        natural[col.name] = max([cell_len(col.name)] + [cell_len(c) for c in cells])
    kept = list(columns)

    def need(whole):
        return sum(natural[c.name] if whole or not c.flex else
                   min(natural[c.name], c.min_width) for c in kept) + len(GAP) * (len(kept) - 1)

    for whole, floor in ((True, protect), (False, -1)):
        while len(kept) > 1 and need(whole) > width:
            worst = max(kept, key=lambda c: c.priority)
            if worst.priority <= floor:
                break
            kept.remove(worst)
    widths = [natural[c.name] for c in kept]
    spare = width - sum(w for c, w in zip(kept, widths) if not c.flex) \
        - len(GAP) * (len(kept) - 1)
    for i, c in enumerate(kept):
        if c.flex:
            widths[i] = max(1, min(natural[c.name], spare))
    return kept, widths


def lines(columns, rows, width, header_style="bold"):
    """The table as rich Text lines: a header, a rule, a line per row."""
    kept, widths = fit(columns, rows, width)
    index = [columns.index(c) for c in kept]
    head = Text(style=header_style)
    for n, (c, w) in enumerate(zip(kept, widths)):
        head.append(_cell(c.name, c, w, n == len(kept) - 1))
        if n < len(kept) - 1:
            head.append(GAP)
    out = [head, Text("─" * min(width, sum(widths) + len(GAP) * (len(kept) - 1)))]
    for row in rows:
        line = Text()
        for n, (i, c, w) in enumerate(zip(index, kept, widths)):
            cell = row[i]
            text, style = (cell, "") if isinstance(cell, str) else cell
            line.append(_cell(text, c, w, n == len(kept) - 1), style=style)
            if n < len(kept) - 1:
                line.append(GAP)
        out.append(line)
    return out


def _text(cell):
    return cell if isinstance(cell, str) else cell[0]


def _cell(text, col, width, last):
    if col.flex:
        text = keep_tail(text, width)
    pad = " " * max(0, width - cell_len(text))
    if col.justify == "right":
        return pad + text
    return text if last else text + pad


BELOW_INDENT = 4


def hanging(columns, rows, width, margin=0, min_room=24, header=True, below=True):
    """A table whose last column wraps and nothing is cut: every cell but
    the last whole at its column's widest (a number, a name, a verdict),
    the last one (units, views/wrap.py; a str: its words) wrapped in the
    width left, its lines indented to its column.  When less than min_room
    is left, each last cell goes under its row, indented, and the header
    leaves its name out (without `below`: None is returned instead).  Cells
    are str or Text; `columns` names every column, the last included.
    Returns (header lines, [each row's lines])."""
    fixed = columns[:-1]
    widths = [max([cell_len(c.name) if header else 0] +
                  [cell_len(_plain(r[i])) for r in rows]) for i, c in enumerate(fixed)]
    start = margin + sum(widths) + len(GAP) * len(fixed)
    beside = width - start >= min_room
    if not (beside or below):
        return None

    def row_start(cells, style=""):
        line = Text(" " * margin, style=style)
        for c, w, cell in zip(fixed, widths, cells):
            cell = cell if isinstance(cell, Text) else Text(cell)
            pad = " " * max(0, w - cell.cell_len)
            line.append(Text.assemble(pad, cell) if c.justify == "right"
                             else Text.assemble(cell, pad))
            line.append(GAP)
        return line

    head = []
    if header:
        names = row_start([c.name for c in fixed], style="bold")
        if beside:
            names.append(columns[-1].name)
        names.rstrip()
        head = [names, Text(" " * margin + "─" * (min(width, names.cell_len) - margin))]
    out = []
    for row in rows:
        first = row_start(row[:-1])
        # words made only now: a table that does not fit makes none
        units = words(row[-1]) if isinstance(row[-1], str) else row[-1]
        if beside:
            out.append(lay_out(units, width, first=first, indent=start))
        else:
            first.rstrip()
            pad = " " * (margin + BELOW_INDENT)
            under = lay_out(units, width, first=pad, indent=len(pad)) if units else []
            out.append([first] + [line for line in under if line.plain])
    return head, out


def _plain(cell):
    return cell.plain if isinstance(cell, Text) else cell
