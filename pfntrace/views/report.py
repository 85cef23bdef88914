"""Human view of an Analysis: rich tables.

render(console, analysis, events=False) prints, in order: the summary, the
probe plan, the per-file table, the per-process table, the invisible writes
(the first INVISIBLE_SHOWN), the fault latency histogram (bcc
print_log2_hist style) and, with events=True, every write fault.
"""

from rich import box
from rich.table import Table
from rich.text import Text

from pfntrace import correlate
from pfntrace.views import export
from pfntrace.views import plan as plan_view

VERDICT_STYLE = {
    "UPDATED": "green",
    "CURRENT": "cyan",
    "MISSED": "bold red",
    "NO_NOTIFIER": "bold magenta",
    "UNDECIDED": "yellow",
}


def _n(v):
    return "-" if v is None else str(v)


def fmt_duration(ns):
    if ns is None:
        return "-"
    if ns < 1_000:
        return "%d ns" % ns
    if ns < 1_000_000:
        return "%.1f us" % (ns / 1e3)
    if ns < 1_000_000_000:
        return "%.1f ms" % (ns / 1e6)
    return "%.3f s" % (ns / 1e9)


def fmt_rel(an, ts):
    if ts is None or an.first_ts is None:
        return "-"
    return "+%.3fs" % ((ts - an.first_ts) / 1e9)


def verdict_text(counts, keys=("UPDATED", "CURRENT", "MISSED", "NO_NOTIFIER", "UNDECIDED")):
    """'UPDATED 3  CURRENT 1  MISSED 2' with MISSED in bold red; zeros left
    out ('-' when all are)."""
    t = Text()
    for k in keys:
        n = counts.get(k, 0)
        if not n:
            continue
        if len(t):
            t.append("  ")
        t.append("%s %d" % (k, n), style=VERDICT_STYLE[k])
    return t if len(t) else Text("-")


def _verdict_cell(name, n):
    if not n:
        return Text("0")
    return Text(str(n), style=VERDICT_STYLE[name])


def summary_table(an, source=None):
    s = an.summary()
    t = Table(title="pfntrace report", box=box.SIMPLE, show_header=False,
              title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value")
    if source:
        t.add_row("recording", source)
    t.add_row("kernel", _n(s["kernel"]))
    if s.get("command"):
        cmd = s["command"]
        t.add_row("command", " ".join(cmd) if isinstance(cmd, (list, tuple)) else str(cmd))
    t.add_row("duration", fmt_duration(s["duration_ns"]))
    if s.get("exit_code") is not None:
        t.add_row("exit code", str(s["exit_code"]))
    t.add_row("events", "%d (%s)" % (s["events"], ", ".join(
        "%s %d" % (k, v) for k, v in s["event_counts"].items() if v) or "none"))
    t.add_row("write faults", "%d: pfn_mkwrite %d, page_mkwrite %d, pmd %d, "
              "first-touch %d, no notifier %d" % (
                  s["write_faults"], s["pfn_mkwrite"], s["page_mkwrite"], s["pmd"],
                  s["first_touch"], s["no_notifier"]))
    t.add_row("verdicts", verdict_text(s["verdicts"]))
    t.add_row("invisible writes", invisible_text(an, s))
    t.add_row("other", "reads %d, retries %d, PMD fallbacks %d, do_wp_page %d, "
              "MAP_SYNC %d, re-protects %d (%d pages)" % (
                  s["reads"], s["retries"], s["huge_fault_fallbacks"], s["wp_entries"],
                  s["map_sync"], s["reprotects"], s["reprotect_pages"]))
    t.add_row("fs_dax tracepoints", "pte %d, pmd %d, write %d" % (
        s["dax_pte_faults"], s["dax_pmd_faults"], s["dax_write_faults"]))
    lost = Text(str(s["lost"]), style="bold red" if s["lost"] else None)
    if s["lost"]:
        why = ", ".join("%s %d" % (k.replace("_", " "), v)
                        for k, v in sorted(s["lost_by_reason"].items()) if v)
        lost.append(" (%s)" % (why or "per CPU: %s" % ", ".join(
            str(x) for x in s["lost_per_cpu"])))
    t.add_row("lost events", lost)
    clock = s.get("clock") or {}
    if clock.get("status") != "read":
        t.add_row("kernel clock", Text("not read (%s): faults that moved no timestamp are "
                                       "UNDECIDED" % clock.get("why", "an older recording"),
                                       style="yellow"))
    if s["truncated"]:
        t.add_row("truncated", Text("yes: %s" % (s["truncation_reason"] or "?"),
                                    style="bold yellow"))
    if s.get("filter"):
        t.add_row("filter", s["filter"])
    for late in an.meta.get("late_handlers") or ():
        # A handler outside the plan's list, probed once a fault showed it:
        # its earlier faults were judged at do_wp_page's return all the same.
        t.add_row("late probe", Text("%s %s from %s" % (
            late["hook"], "attached" if late["attached"] else "could not be attached",
            fmt_rel(an, late["first_seen_ns"])), style="yellow"))
    return t


def invisible_text(an, s):
    """The invisible-write count, what it means, and the multigrain alarm."""
    if not s["getattr_probed"]:
        return Text("unknown: getattr (vfs_getattr_nosec) was not probed", style="yellow")
    n = s["invisible_writes"]
    t = Text("%d" % n, style="bold yellow" if n else None)
    t.append(" of %d write faults left mtime and ctime as the last stat before them saw "
             "them (%d stats of traced files)" % (s["write_faults"], s["getattrs"]))
    loud = an.multigrain_warning()
    if loud:
        t.append("\n" + loud, style="bold red")
    return t


INVISIBLE_SHOWN = 20


def invisible_lines(an):
    """The first INVISIBLE_SHOWN invisible writes, one line each."""
    rows = an.invisible
    out = Text()
    if not rows:
        return out
    out.append("invisible writes\n", style="italic")
    for f in rows[:INVISIBLE_SHOWN]:
        out.append("%s pid %d (%s) %s page %d: %s\n" % (
            fmt_rel(an, f.ts), f.pid, f.comm, f.path, f.pgoff, f.invisible_detail))
    if len(rows) > INVISIBLE_SHOWN:
        out.append("... and %d more (report --json lists them all)\n"
                   % (len(rows) - INVISIBLE_SHOWN))
    return out


def plan_table(an):
    """The recording's probe plan, grouped (views/plan.py), and the settings
    it was compiled with."""
    plan = an.header.get("plan") or {}
    hooks = plan.get("hooks") if isinstance(plan, dict) else None
    if isinstance(hooks, dict):     # {name: status}: an early format
        hooks = [{"hook": str(n), "status": str(st)} for n, st in hooks.items()]
    t = plan_view.table(hooks if isinstance(hooks, list) else [])
    for key in ("huge_fault_arg_is_order",):
        if isinstance(plan, dict) and key in plan:
            t.add_row(key, "", str(plan[key]))
    if isinstance(plan, dict) and "attach" in plan:
        t.add_row(*(str(c) for c in plan_view.attach_row(plan)))
    return t


WIDE = 120  # below this the files table becomes a list: paths need room
INVIS_WIDE = 150  # the same with the invisible-writes column


def _files_columns(an):
    columns = (("file", "left"), ("writes", "right"), ("pfn_mkw", "right"),
               ("page_mkw", "right"), ("pmd", "right"), ("1st", "right"),
               ("sync", "right"), ("reprot", "right"), ("updated", "right"),
               ("current", "right"), ("MISSED", "right"), ("no_notif", "right"),
               ("invis", "right"), ("first", "right"), ("last", "right"),
               ("final mtime", "left"))
    if not an.invisible:
        # Only where there is something to show: the table is wide already.
        columns = tuple(c for c in columns if c[0] != "invis")
    return columns


def _file_cells(an, f):
    k = f.kinds
    v = f.verdicts
    path = Text(f.path)
    if f.deleted or f.unmounted:
        path.append(" (deleted)" if f.deleted else " (unmounted)", style="yellow")
    if f.external:
        path.append(" (timestamps set externally)", style="yellow")
    if f.deleted or f.unmounted:
        final = Text(f.final_cmp, style="yellow")
    elif f.final_mtime is not None:
        final = Text("%s %s" % (f.final_cmp or "?", correlate.fmt_wall(f.final_mtime)[11:23]))
    else:
        final = Text("-")
    return {
        "file": path, "writes": str(f.write_faults), "pfn_mkw": str(k[correlate.K_PFN]),
        "page_mkw": str(k[correlate.K_PAGE]), "pmd": str(k[correlate.K_PMD]),
        "1st": str(k[correlate.K_FAULT]), "sync": str(f.map_sync),
        "reprot": str(f.reprotects),
        "updated": _verdict_cell("UPDATED", v[correlate.V_UPDATED]),
        "current": _verdict_cell("CURRENT", v[correlate.V_CURRENT]),
        "MISSED": _verdict_cell("MISSED", v[correlate.V_MISSED]),
        "no_notif": _verdict_cell("NO_NOTIFIER", v[correlate.V_NO_NOTIFIER]),
        "invis": Text(str(f.invisible), style="bold yellow" if f.invisible else None),
        "first": fmt_rel(an, f.first_ts), "last": fmt_rel(an, f.last_fault_ts),
        "final mtime": final,
    }


def files_table(an):
    t = Table(title="files", box=box.SIMPLE_HEAD, title_justify="left", padding=(0, 1),
              collapse_padding=True,
              pad_edge=False)
    columns = _files_columns(an)
    for name, just in columns:
        if name == "file":
            t.add_column(name, justify=just, min_width=12, overflow="fold")
        else:
            t.add_column(name, justify=just, no_wrap=True,
                         min_width=18 if name == "final mtime" else None)
    for f in an.files:
        cells = _file_cells(an, f)
        t.add_row(*(cells[name] for name, _ in columns))
    return t


def files_lines(an):
    """The files table as two lines per file, for narrow terminals (the lab's
    80-column serial console): the path whole, then what is not zero."""
    out = Text()
    out.append("files\n", style="italic")
    for f in an.files:
        cells = _file_cells(an, f)
        out.append(cells["file"])
        out.append("\n  writes %s" % cells["writes"])
        for name, label in (("pfn_mkw", "pfn_mkwrite"), ("page_mkw", "page_mkwrite"),
                            ("pmd", "pmd"), ("1st", "first-touch"), ("sync", "MAP_SYNC"),
                            ("reprot", "re-protects")):
            if cells[name] != "0":
                out.append(" %s %s" % (label, cells[name]))
        out.append(" ·")
        for name in ("UPDATED", "CURRENT", "MISSED", "NO_NOTIFIER"):
            n = f.verdicts[correlate.VERDICTS.index(name)]
            if n:
                out.append(" ")
                out.append("%s %d" % (name, n), style=VERDICT_STYLE[name])
        if f.invisible:
            out.append(" · ")
            out.append("invisible %d" % f.invisible, style="bold yellow")
        out.append(" · final mtime ")
        out.append(cells["final mtime"])
        out.append("\n")
    return out


def processes_table(an):
    t = Table(title="processes", box=box.SIMPLE_HEAD, title_justify="left")
    for name, just in (("pid", "right"), ("comm", "left"), ("writes", "right"),
                       ("reads", "right"), ("files", "right"), ("invis", "right"),
                       ("verdicts", "left")):
        t.add_column(name, justify=just)
    for p in an.processes:
        t.add_row(str(p.pid), p.comm, str(p.write_faults), str(p.reads),
                  str(len(p.files)), str(p.invisible), verdict_text(p.verdict_counts()))
    return t


def latency_text(an, width=40):
    """bcc print_log2_hist style: 'nsecs : count distribution'."""
    rows = export.latency_rows(an)
    out = ["latency of write faults, entry to return (log2 histogram)"]
    if not rows:
        out.append("  (no handler write faults)")
        return Text("\n".join(out))
    top = max(r["count"] for r in rows) or 1
    hw = max(len(str(r["high"])) for r in rows)
    hw = max(hw, 10)
    out.append("%*s : count     distribution" % (hw * 2 + 4, "nsecs"))
    for r in rows:
        stars = int(r["count"] * width / top)
        out.append("%*d -> %-*d : %-8d |%-*s|" % (
            hw, r["low"], hw, r["high"], r["count"], width, "*" * stars))
    return Text("\n".join(out))


def _event_detail(f):
    if f.invisible:
        return "%s; INVISIBLE: %s" % (f.detail, f.invisible_detail)
    return f.detail


def events_table(an):
    t = Table(title="write faults", box=box.SIMPLE_HEAD, title_justify="left",
              collapse_padding=True, pad_edge=False)
    for name, just in (("time", "right"), ("pid", "right"), ("tid", "right"),
                       ("comm", "left"), ("file", "left"), ("page", "right"),
                       ("kind", "left"), ("verdict", "left"), ("latency", "right"),
                       ("ftu", "right"), ("detail", "left")):
        if name == "detail":
            t.add_column(name, justify=just, min_width=36, ratio=1)
        elif name == "file":
            t.add_column(name, justify=just, overflow="fold", min_width=8)
        else:
            t.add_column(name, justify=just, no_wrap=True)
    for f in an.faults:
        t.add_row(fmt_rel(an, f.ts), str(f.pid), str(f.tid), f.comm, f.path,
                  str(f.pgoff), f.kind, Text(f.verdict, style=VERDICT_STYLE[f.verdict]),
                  fmt_duration(f.latency), str(f.ftu_calls), _event_detail(f))
    return t


def events_lines(an):
    """The write faults as two lines each, for narrow consoles."""
    out = Text()
    out.append("write faults\n", style="italic")
    for f in an.faults:
        out.append("%s pid %d/%d %s %s page %d %s " % (
            fmt_rel(an, f.ts), f.pid, f.tid, f.comm, f.path, f.pgoff, f.kind))
        out.append(f.verdict, style=VERDICT_STYLE[f.verdict])
        out.append(" %s ftu %d\n    %s\n" % (fmt_duration(f.latency), f.ftu_calls,
                                              _event_detail(f)))
    return out


def render(console, an, events=False, source=None):
    console.print(summary_table(an, source))
    if an.header.get("plan"):
        console.print(plan_table(an))
    if console.width < (INVIS_WIDE if an.invisible else WIDE):
        console.print(files_lines(an))
    else:
        console.print(files_table(an))
    console.print(processes_table(an))
    if an.invisible:
        console.print(invisible_lines(an), overflow="fold")
    console.print(latency_text(an))
    if events:
        if not an.faults_kept:
            console.print("(write faults were not kept)")
        elif console.width < 120:
            console.print(events_lines(an), overflow="fold")
        else:
            console.print(events_table(an))
