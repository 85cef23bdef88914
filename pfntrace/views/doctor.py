"""`pfntrace doctor` as text: every check whole, at any width.

A table of check, status, detail and fix needs over 450 columns on a real
host (the function hooks' detail alone is 304 characters on our 6.18
host), so rich shrank its cells and cut them: at 80 columns 23 cells ended
in "…", the fix among them ("install linux-headers-6.18.4…").  So each
check is a list entry, the way apt and systemctl status print: its status
and name, then its detail and its fix on their own indented lines, wrapped
between clauses (views/wrap.py) so that a command in a fix stays on one
line.  `doctor --json` is not made here.
"""

from rich.text import Text

from pfntrace.views.wrap import clauses, lay_out, show

STATUS_WIDTH = 7        # "BLOCKS" and a space: the names line up
INDENT = 4
FIX = "fix: "


def status(check):
    """(word, style) of a check's outcome."""
    if check.ok:
        return "ok", "green"
    if check.blocking:
        return "BLOCKS", "bold red"
    return "no", "yellow"


def check_lines(check, width):
    """A check as lines: status and name, detail, fix."""
    word, style = status(check)
    head = Text(word.ljust(STATUS_WIDTH), style=style)
    lines = lay_out(clauses(check.name, style="bold"), width, first=head,
                    indent=STATUS_WIDTH)
    pad = " " * INDENT
    if check.detail:
        lines += lay_out(clauses(check.detail), width, first=pad, indent=INDENT)
    if check.fix:
        lines += lay_out(clauses(check.fix), width,
                         first=Text.assemble(pad, (FIX, "cyan")), indent=INDENT + len(FIX))
    return lines


def verdict_lines(blockers, width):
    """The last word: whether `pfntrace record` can run, and if not the
    first blocker's fix."""
    if not blockers:
        return [Text("pfntrace record can run here.", style="green")]
    first = Text("pfntrace record cannot run here: ", style="bold red")
    return lay_out(clauses(blockers[0].fix), width, first=first, indent=INDENT)


def lines(checks, width):
    blockers = [c for c in checks if c.blocking and not c.ok]
    out = []
    for c in checks:
        out += check_lines(c, width)
    return out + [Text()] + verdict_lines(blockers, width)


def render(console, checks):
    show(console, lines(checks, console.width))
