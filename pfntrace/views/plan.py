"""The probe plan as people read it: grouped by what it means for the
recording, one line per function (its kprobe and kretprobe together, or
the fentry and fexit that replace them, with why that mechanism).

Shared by `record --plan`, the report's probe table and top's first line,
so the three say the same thing: "not applicable here" (a handler of a
filesystem that is not mounted) is never counted as missing.
"""

from rich import box
from rich.table import Table
from rich.text import Text

# status in the plan -> (group title, style), in the order shown.
GROUPS = (
    ("attach", "attached", "green"),
    ("inlined", "inferred", "yellow"),
    ("n/a", "not applicable here", "dim"),
    ("missing", "missing", "red"),
)
_ORDER = {status: i for i, (status, _t, _s) in enumerate(GROUPS)}


def grouped(hooks):
    """[(status, title, style, [(hook, kinds, why)])] for the groups that
    have any hook; statuses this version does not know come last, as is."""
    rows = {}
    for h in hooks:
        if not isinstance(h, dict):
            continue
        status = str(h.get("status", "?"))
        name = str(h.get("hook") or h.get("name") or "?")
        why = str(h.get("why", ""))
        if h.get("attach_why"):
            why += "; %s: %s" % (h.get("mechanism"), h["attach_why"])
        entry = rows.setdefault(status, {}).setdefault(name, {"kinds": [], "why": why})
        # how it is attached when the plan says (fentry/fexit), else its role
        kind = str(h.get("mechanism") or h.get("kind", ""))
        if kind and kind not in entry["kinds"]:
            entry["kinds"].append(kind)
    known = {s: (t, st) for s, t, st in GROUPS}
    out = []
    for status in sorted(rows, key=lambda s: (_ORDER.get(s, len(GROUPS)), s)):
        title, style = known.get(status, (status, ""))
        out.append((status, title, style,
                    [(name, "+".join(e["kinds"]), e["why"]) for name, e in rows[status].items()]))
    return out


def counts(hooks):
    """{status: number of probes} (a kprobe and a kretprobe are two)."""
    out = {}
    for h in hooks:
        if isinstance(h, dict):
            out[h.get("status")] = out.get(h.get("status"), 0) + 1
    return out


def attach_row(plan):
    """("attach", mode, what it means here) for a plan's table."""
    mode = str(plan.get("attach") or "kprobe")
    fentry = plan.get("fentry") if isinstance(plan.get("fentry"), dict) else {}
    if mode == "kprobe":
        why = "kprobes and kretprobes only (--attach kprobe)"
    elif fentry.get("ok"):
        why = "fentry/fexit where possible (%s), kprobes elsewhere" % fentry.get("why", "")
    else:
        why = "kprobes: no fentry here (%s)" % fentry.get("why", "not recorded")
    return "attach", mode, why


def table(hooks, title="probe plan"):
    """A rich table: a section per group, its title and size first."""
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_header=False,
              pad_edge=False)
    t.add_column("hook", no_wrap=False, overflow="fold")
    t.add_column("probes", no_wrap=False, overflow="fold")
    t.add_column("why", no_wrap=False, overflow="fold", ratio=1)
    for _status, title_, style, rows in grouped(hooks):
        t.add_row(Text("%s (%d)" % (title_, len(rows)), style="bold " + style if style else "bold"))
        for name, kinds, why in rows:
            t.add_row(Text("  " + name, style=style), kinds, why)
    return t
