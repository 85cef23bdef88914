"""`pfntrace top`: a live view of write faults, counted in the kernel."""

import os
import select
import signal
import sys
import time

import click

from pfntrace.commands.common import (Fail, Number, Quit, attach_option, bpf_stats_option,
                                      build_plan, on_term, start_counters, watched_mount)


def _checks(mounts, pid, interval, count):
    """One-line errors for bad input, before anything is compiled."""
    from pfntrace import doctor

    if interval <= 0:
        raise Fail("--interval must be positive")
    if count is not None and count <= 0:
        raise Fail("--count must be positive")
    if pid and not os.path.exists("/proc/%d" % pid):
        raise Fail("no process with pid %d" % pid)
    blocker = doctor.record_blocker()
    if blocker:
        raise Fail(blocker)
    return [watched_mount(m) for m in mounts]


def plan_counts(plan, attached):
    """{"attached", "inferred", "n/a", "missing"} for the header: what top
    really attached, hooks inlined into a caller (their path is inferred),
    handlers of filesystems not mounted here, and hooks this kernel lacks.
    Tracepoints are not used by top."""
    from pfntrace.views.plan import counts

    n = counts(h for h in plan["hooks"] if h["kind"] != "tracepoint")
    fentry = sum(1 for h in plan["hooks"] if h.get("mechanism") in ("fentry", "fexit")
                 and (h["kind"], h["hook"]) in attached)
    return {"attached": len(attached), "fentry": fentry, "inferred": n.get("inlined", 0),
            "n/a": n.get("n/a", 0), "missing": n.get("missing", 0)}


def _say_probe_costs(reader):
    """At the end, on stderr: where the BPF side's time went, per program."""
    from pfntrace.bpfstats import probe_cost_line

    if not reader.stats_enabled:
        return
    try:
        line = probe_cost_line(reader.program_runs())
    except Exception:   # noqa: BLE001 (a summary on the way out: never the exit's cause)
        return
    if line:
        click.echo(line, err=True)


def run_plain(state, reader, resolver, interval, count, out=sys.stdout):
    """Print a text snapshot per interval (stdout is not a terminal)."""
    from pfntrace.views.top import plain

    shown = 0
    next_t = time.monotonic()
    while count is None or shown < count:
        next_t += interval
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        snap = reader.read()
        state.update(snap, resolver.resolve(snap.files))
        out.write(plain(state))
        out.write("\n")
        out.flush()
        shown += 1


def run_live(state, reader, resolver, interval, count):
    """The rich Live screen; keys from stdin in cbreak mode."""
    import termios
    import tty

    from rich.console import Console
    from rich.live import Live

    from pfntrace.views.top import render

    # Process names are anyone's to choose: "[/]" or ":x:" in one is text,
    # not rich markup or an emoji code (a MarkupError would end top).
    console = Console(markup=False, emoji=False)
    fd = sys.stdin.fileno() if sys.stdin.isatty() else None
    old = termios.tcgetattr(fd) if fd is not None else None
    try:
        if fd is not None:
            tty.setcbreak(fd)
        snap = reader.read()
        state.update(snap, resolver.resolve(snap.files))
        shown = 0

        def screen():
            # Asked each time: a resized terminal gets a screen of its size.
            size = console.size
            return render(state, width=size.width, height=size.height)

        with Live(screen(), console=console, screen=True, auto_refresh=False,
                  redirect_stdout=False, redirect_stderr=False) as live:
            next_t = time.monotonic() + interval
            while count is None or shown < count:
                timeout = max(0.0, next_t - time.monotonic())
                ready = select.select([fd], [], [], timeout)[0] if fd is not None else \
                    time.sleep(timeout)
                if ready:
                    for ch in os.read(fd, 64).decode("utf-8", "replace"):
                        if not state.key(ch):
                            return
                    live.update(screen(), refresh=True)
                if time.monotonic() >= next_t:
                    next_t += interval
                    snap = reader.read()
                    shown += 1
                    if not state.paused:
                        state.update(snap, resolver.resolve(snap.files))
                        live.update(screen(), refresh=True)
    finally:
        if old is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)


@click.command("top")
@click.option("--mount", "mounts", multiple=True, metavar="PATH",
              help="Watch only files on this DAX mount (repeatable).")
@click.option("-p", "--pid", type=Number(0, integer=True), default=0,
              help="Watch only this process and its children.")
@click.option("--interval", type=Number(hi=86400), default=1.0, metavar="S", show_default=True,
              help="Refresh every S seconds.")
@click.option("--all-files", is_flag=True,
              help="Also count page-cache files (->page_mkwrite), not only DAX files.")
@click.option("-n", "--count", type=Number(integer=True), default=None, metavar="N",
              help="Exit after N refreshes.")
@bpf_stats_option("print pfntrace's own per probe at the end")
@attach_option
def command(mounts, pid, interval, all_files, count, bpf_stats, attach):
    """Live per-file and per-process view of write faults on DAX mounts.

    Counting and the UPDATED/CURRENT/MISSED verdicts happen in the kernel;
    only counters cross to user space, once per refresh.  Keys: s cycles the
    sort column, p pauses, f filters by name, q quits.  When stdout is not a
    terminal, prints a text snapshot per interval instead.

    \b
    pfntrace top --mount /mnt/dax
    pfntrace top -p 1234 --interval 2
    pfntrace top -n 5 > faults.txt
    """
    from pfntrace import aggregate, recorder, tracer
    from pfntrace.views.top import TopState

    watched = _checks(mounts, pid, interval, count)
    plan = build_plan(attach, all_files, counting=True)
    tr = tracer.Tracer(plan, follow=bool(pid),
                       devs=[tracer.kernel_dev(m[1], m[2]) for m in watched],
                       all_files=all_files, aggregate=True)
    old_term = signal.signal(signal.SIGTERM, on_term)
    reader = None
    try:
        start_counters(tr, plan)
        if pid:
            tr.follow_pid(pid)
        reader = aggregate.Reader(tr, interval_ns=int(interval * 1e9), bpf_stats=bpf_stats)
        roots = [m[0] for m in watched] or recorder._dax_mount_points()
        resolver = aggregate.PathResolver(roots)
        state = TopState(kernel=plan["kernel"], plan_counts=plan_counts(plan, tr.attached),
                         mounts=[m[0] for m in watched], interval_s=interval, pid=pid,
                         multigrain=bool((plan.get("clock") or {}).get("mg_floor")))
        if sys.stdout.isatty():
            run_live(state, reader, resolver, interval, count)
        else:
            run_plain(state, reader, resolver, interval, count)
    except (KeyboardInterrupt, Quit):
        pass
    except BrokenPipeError:
        # `pfntrace top | head`: the reader left.
        sys.stdout = open(os.devnull, "w")
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if reader is not None:
            _say_probe_costs(reader)
            reader.close()
        tr.close()
