"""Human view of an Analysis, fitted to the console's width.

render(console, analysis, events=False) prints, in order: the summary, the
probe plan, the per-file table, the per-process table, the invisible writes
(the first INVISIBLE_SHOWN), the fault latency histogram (bcc
print_log2_hist style) and, with events=True, every write fault.

Nothing is cut, at any width from 60 columns up and when piped: the text is
laid out here (views/wrap.py, views/columns.py), not by rich's tables, which
shrink cells until they cut them or break "MISSED 1" between its word and
its number.  A table is used only where it fits whole; else its rows become
wrapped lines, continuation lines indented, paths wrapped after a slash.
"""

from rich import box
from rich.table import Table
from rich.text import Text

from pfntrace import correlate
from pfntrace.findings import exposed_detail
from pfntrace.views import export
from pfntrace.views import plan as plan_view
from pfntrace.views.columns import Column, hanging
from pfntrace.views.wrap import Units, clauses, lay_out, show, words

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


def verdict_units(counts, keys=("UPDATED", "CURRENT", "MISSED", "NO_NOTIFIER", "UNDECIDED")):
    """'UPDATED 3  CURRENT 1  MISSED 2' as units, a verdict never apart from
    its count, MISSED in bold red; zeros left out ('-' when all are)."""
    out = Units(sep="  ")
    for k in keys:
        n = counts.get(k, 0)
        if n:
            out.append(Text("%s %d" % (k, n), style=VERDICT_STYLE[k]))
    return out or Units(["-"])


def _verdict_cell(name, n):
    if not n:
        return Text("0")
    return Text(str(n), style=VERDICT_STYLE[name])


SUMMARY_MARGIN = 2


def summary_rows(an, source=None):
    """(label, units) of the summary, in order."""
    s = an.summary()
    rows = []
    if source:
        rows.append(("recording", [source]))
    rows.append(("kernel", [_n(s["kernel"])]))
    if s.get("command"):
        cmd = s["command"]
        rows.append(("command", words(" ".join(cmd) if isinstance(cmd, (list, tuple))
                                      else str(cmd))))
    rows.append(("duration", [fmt_duration(s["duration_ns"])]))
    if s.get("exit_code") is not None:
        rows.append(("exit code", [str(s["exit_code"])]))
    rows.append(("events", clauses("%d (%s)" % (s["events"], ", ".join(
        "%s %d" % (k, v) for k, v in s["event_counts"].items() if v) or "none"))))
    rows.append(("write faults", clauses(
        "%d: pfn_mkwrite %d, page_mkwrite %d, pmd %d, first-touch %d, no notifier %d" % (
            s["write_faults"], s["pfn_mkwrite"], s["page_mkwrite"], s["pmd"],
            s["first_touch"], s["no_notifier"]))))
    rows.append(("verdicts", verdict_units(s["verdicts"])))
    rows.append(("invisible writes", words(invisible_text(s))))
    rows.append(("exposed stats", words(exposed_text(an, s))))
    loud = an.multigrain_warning()
    if loud:
        rows.append(("", words(loud, style="bold red")))
    rows.append(("other", clauses(
        "reads %d, retries %d, PMD fallbacks %d, do_wp_page %d, MAP_SYNC %d, "
        "re-protects %d (%d pages)" % (
            s["reads"], s["retries"], s["huge_fault_fallbacks"], s["wp_entries"],
            s["map_sync"], s["reprotects"], s["reprotect_pages"]))))
    rows.append(("fs_dax tracepoints", clauses("pte %d, pmd %d, write %d" % (
        s["dax_pte_faults"], s["dax_pmd_faults"], s["dax_write_faults"]))))
    lost = Text(str(s["lost"]), style="bold red" if s["lost"] else None)
    if s["lost"]:
        why = ", ".join("%s %d" % (k.replace("_", " "), v)
                        for k, v in sorted(s["lost_by_reason"].items()) if v)
        lost.append(" (%s)" % (why or "per CPU: %s" % ", ".join(
            str(x) for x in s["lost_per_cpu"])))
    rows.append(("lost events", clauses(lost)))
    clock = s.get("clock") or {}
    if clock.get("status") != "read":
        rows.append(("kernel clock", words(
            "not read (%s): faults that moved no timestamp are UNDECIDED"
            % clock.get("why", "an older recording"), style="yellow")))
    if s["truncated"]:
        rows.append(("truncated", words("yes: %s" % (s["truncation_reason"] or "?"),
                                          style="bold yellow")))
    if s.get("filter"):
        rows.append(("filter", [s["filter"]]))
    for late in an.meta.get("late_handlers") or ():
        # A handler outside the plan's list, probed once a fault showed it:
        # its earlier faults were judged at do_wp_page's return all the same.
        rows.append(("late probe", words("%s %s from %s" % (
            late["hook"], "attached" if late["attached"] else "could not be attached",
            fmt_rel(an, late["first_seen_ns"])), style="yellow")))
    return rows


def summary_lines(an, width, source=None):
    rows = [(Text(label, style="bold"), units) for label, units in summary_rows(an, source)]
    _head, body = hanging([Column("what", 0, "left"), Column("value", 0, "left")], rows,
                          width, margin=SUMMARY_MARGIN, header=False)
    return [Text("pfntrace report", style="italic"), Text()] + _joined(body) + [Text()]


def _joined(row_lines):
    return [line for lines in row_lines for line in lines]


def invisible_text(s):
    """The invisible-write count and what it means."""
    if not s["getattr_probed"]:
        return Text("unknown: getattr (vfs_getattr_nosec) was not probed", style="yellow")
    n = s["invisible_writes"]
    t = Text("%d" % n, style="bold yellow" if n else None)
    t.append(" of %d write faults left mtime and ctime as the last stat before them saw "
             "them (%d stats of traced files)" % (s["write_faults"], s["getattrs"]))
    return t


def exposed_text(an, s):
    """The exposed-observation count and what it means."""
    e = an.exposure
    if e is None:
        return Text("unknown: a recording made without write-exposure windows",
                    style="yellow")
    if not s["getattr_probed"]:
        return Text("unknown: getattr (vfs_getattr_nosec) was not probed", style="yellow")
    t = Text("%d" % e.exposed, style="bold yellow" if e.exposed else None)
    t.append(" of %d stats of written files came while a page of the file was still "
             "writable after its stamping fault: stores after them change the data under "
             "the mtime they saw" % (e.exposed + e.unexposed))
    t.append("; %d windows (written back %d, unmapped %d, open at the end %d)" % (
        e.opened, e.closed.get("writeback", 0), e.closed.get("unmap", 0),
        e.closed.get("open", 0)))
    return t


INVISIBLE_SHOWN = 20


LINE_INDENT = 4      # a wrapped line's next lines


def invisible_lines(an, width):
    """The first INVISIBLE_SHOWN invisible writes, each a wrapped line."""
    rows = an.invisible
    if not rows:
        return []
    out = [Text("invisible writes", style="italic")]
    for f in rows[:INVISIBLE_SHOWN]:
        units = [fmt_rel(an, f.ts), "pid %d" % f.pid, "(%s)" % f.comm, f.path,
                 "page %d:" % f.pgoff] + words(f.invisible_detail)
        out += lay_out(units, width, indent=LINE_INDENT)
    if len(rows) > INVISIBLE_SHOWN:
        out += lay_out(words("and %d more (report --json lists them all)"
                               % (len(rows) - INVISIBLE_SHOWN)), width, indent=LINE_INDENT)
    return out + [Text()]


def exposed_lines(an, width):
    """The first INVISIBLE_SHOWN exposed stats, each a wrapped line."""
    e = an.exposure
    if e is None or not e.observations:
        return []
    names = {(f.dev, f.ino): f.shown_path for f in an.files}
    out = [Text("exposed stats", style="italic")]
    for ob in e.observations[:INVISIBLE_SHOWN]:
        units = [fmt_rel(an, ob.ts_ns), "pid %d" % ob.pid, "(%s)" % ob.comm,
                 names.get(ob.key, correlate.file_key(*ob.key)) + ":"]
        out += lay_out(units + words(exposed_detail(ob, e.end_ns)), width, indent=LINE_INDENT)
    if len(e.observations) > INVISIBLE_SHOWN:
        out += lay_out(words("and %d more (report --json lists them all)"
                               % (len(e.observations) - INVISIBLE_SHOWN)), width,
                       indent=LINE_INDENT)
    return out + [Text()]


PLAN_MIN_ROOM = 24     # the why of a hook beside it; else under it


def plan_lines(an, width):
    """The recording's probe plan, grouped as views/plan.py groups it (so
    it says what record --plan says), and the settings it was compiled
    with: a title line per group, then a line per function, its why
    wrapped."""
    plan = an.header.get("plan") or {}
    hooks = plan.get("hooks") if isinstance(plan, dict) else None
    if isinstance(hooks, dict):     # {name: status}: an early format
        hooks = [{"hook": str(n), "status": str(st)} for n, st in hooks.items()]
    groups = plan_view.grouped(hooks if isinstance(hooks, list) else [])
    rows, titles = [], {}
    for _status, title, style, members in groups:
        titles[len(rows)] = Text("%s (%d)" % (title, len(members)),
                                 style="bold " + style if style else "bold")
        rows += [(Text("  " + name, style=style), kinds, why)
                 for name, kinds, why in members]
    if isinstance(plan, dict) and "huge_fault_arg_is_order" in plan:
        rows.append(("huge_fault_arg_is_order", "", [str(plan["huge_fault_arg_is_order"])]))
    if isinstance(plan, dict) and "attach" in plan:
        key, mode, why = (str(c) for c in plan_view.attach_row(plan))
        rows.append((key, mode, why))
    _head, body = hanging([Column("hook", 0, "left"), Column("probes", 0, "left"),
                           Column("why", 0, "left")], rows, width, margin=1,
                          min_room=PLAN_MIN_ROOM, header=False)
    out = [Text("probe plan", style="italic"), Text()]
    for n, lines in enumerate(body):
        if n in titles:
            out.append(Text(" ") + titles[n])
        out += lines
    return out + [Text()]


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


def fits(console, table):
    """Whether rich can print the table with every cell whole: at its
    natural width, where no cell wraps, folds or is cut."""
    wide = console.options.update_width(1 << 16)
    return console.measure(table, options=wide).maximum <= console.width


def files_lines(an, width):
    """The files table as lines, where it does not fit (the lab's
    80-column serial console): the path whole, then what is not zero."""
    out = [Text("files", style="italic")]
    for f in an.files:
        cells = _file_cells(an, f)
        out += lay_out(words(cells["file"]), width, indent=LINE_INDENT)
        units = ["writes %s" % cells["writes"]]
        for name, label in (("pfn_mkw", "pfn_mkwrite"), ("page_mkw", "page_mkwrite"),
                            ("pmd", "pmd"), ("1st", "first-touch"), ("sync", "MAP_SYNC"),
                            ("reprot", "re-protects")):
            if cells[name] != "0":
                units.append("%s %s" % (label, cells[name]))
        verdicts = [Text("%s %d" % (name, n), style=VERDICT_STYLE[name])
                    for name, n in zip(correlate.VERDICTS, f.verdicts)
                    if n and name != "UNDECIDED"]
        invisible = [Text("invisible %d" % f.invisible, style="bold yellow")] \
            if f.invisible else []
        final = [Text.assemble("final mtime ", cells["final mtime"])]
        out += lay_out(_dotted(units, verdicts, invisible, final), width, first="  ",
                       indent=LINE_INDENT)
    return out + [Text()]


def _dotted(*groups):
    """Units of several groups, a ' ·' closing each group but the last."""
    groups = [list(g) for g in groups if g]
    for g in groups[:-1]:
        g[-1] = Text.assemble(g[-1], " ·")
    return [u for g in groups for u in g]


PROCESS_COLUMNS = (Column("pid", 0), Column("comm", 0, "left"), Column("writes", 0),
                   Column("reads", 0), Column("files", 0), Column("invis", 0),
                   Column("verdicts", 0, "left"))


def processes_lines(an, width):
    rows = [(str(p.pid), p.comm, str(p.write_faults), str(p.reads), str(len(p.files)),
             str(p.invisible), verdict_units(p.verdict_counts())) for p in an.processes]
    head, body = hanging(PROCESS_COLUMNS, rows, width, margin=2, min_room=16)
    return [Text("processes", style="italic"), Text()] + head + _joined(body) + [Text()]


BAR_WIDTH = 40


def latency_lines(an, width):
    """bcc print_log2_hist style: 'nsecs : count distribution', the bars
    shortened to fit the width."""
    rows = export.latency_rows(an)
    out = ["latency of write faults, entry to return (log2 histogram)"]
    if not rows:
        out.append("  (no handler write faults)")
        return [Text(line) for line in out]
    top = max(r["count"] for r in rows) or 1
    hw = max(10, max(len(str(r["high"])) for r in rows))
    cw = max(8, len(str(top)))
    # '%*d -> %-*d : %-*d |' and the closing '|' around the bar
    bar = max(10, min(BAR_WIDTH, width - (2 * hw + cw + 10)))
    out.append("%*s : count%*s distribution" % (hw * 2 + 4, "nsecs", cw - 4, ""))
    for r in rows:
        stars = int(r["count"] * bar / top)
        out.append("%*d -> %-*d : %-*d |%-*s|" % (
            hw, r["low"], hw, r["high"], cw, r["count"], bar, "*" * stars))
    return [Text(line) for line in out]


def _event_detail(f):
    if f.invisible:
        return "%s; INVISIBLE: %s" % (f.detail, f.invisible_detail)
    return f.detail


EVENT_COLUMNS = (Column("time", 0), Column("pid", 0), Column("tid", 0),
                 Column("comm", 0, "left"), Column("file", 0, "left"), Column("page", 0),
                 Column("kind", 0, "left"), Column("verdict", 0, "left"),
                 Column("latency", 0), Column("ftu", 0), Column("detail", 0, "left"))
DETAIL_MIN_ROOM = 36


def events_table(an, width):
    """The write faults as a table, its detail column wrapped; None when
    the detail would have less than DETAIL_MIN_ROOM columns."""
    rows = [(fmt_rel(an, f.ts), str(f.pid), str(f.tid), f.comm, f.path, str(f.pgoff),
             f.kind, Text(f.verdict, style=VERDICT_STYLE[f.verdict]),
             fmt_duration(f.latency), str(f.ftu_calls), _event_detail(f))
            for f in an.faults]
    laid = hanging(EVENT_COLUMNS, rows, width, margin=1, min_room=DETAIL_MIN_ROOM,
                   below=False)
    if laid is None:
        return None
    head, body = laid
    return [Text("write faults", style="italic"), Text()] + head + _joined(body) + [Text()]


def events_lines(an, width):
    """The write faults as wrapped lines, the detail on its own, for
    narrow consoles."""
    out = [Text("write faults", style="italic")]
    pad = " " * LINE_INDENT
    for f in an.faults:
        out += lay_out([fmt_rel(an, f.ts), "pid %d/%d" % (f.pid, f.tid), f.comm, f.path,
                        "page %d" % f.pgoff, f.kind,
                        Text(f.verdict, style=VERDICT_STYLE[f.verdict]),
                        fmt_duration(f.latency), "ftu %d" % f.ftu_calls],
                       width, indent=LINE_INDENT)
        out += lay_out(words(_event_detail(f)), width, first=pad, indent=LINE_INDENT)
    return out + [Text()]


def render(console, an, events=False, source=None):
    width = console.width
    show(console, summary_lines(an, width, source))
    if an.header.get("plan"):
        show(console, plan_lines(an, width))
    table = files_table(an)
    if fits(console, table):
        console.print(table)
    else:
        show(console, files_lines(an, width))
    show(console, processes_lines(an, width))
    show(console, invisible_lines(an, width))
    show(console, exposed_lines(an, width))
    show(console, latency_lines(an, width))
    if events:
        if not an.faults_kept:
            console.print("(write faults were not kept)")
        else:
            show(console, events_table(an, width) or events_lines(an, width))
