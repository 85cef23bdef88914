"""`pfntrace record`: trace write faults into a recording file."""

import os
import shutil
import sys

import click

from pfntrace.cli import Fail, Number
from pfntrace.recording import DEFAULT_NAME


def record_options(f):
    """The options `record` and `check` share."""
    options = [
        click.option("-o", "--output", default=None, metavar="FILE",
                     help="Recording to write  [default: %s]" % DEFAULT_NAME),
        click.option("--mount", "mounts", multiple=True, metavar="PATH",
                     help="Trace only files on this DAX mount (repeatable)."),
        click.option("-p", "--pid", type=Number(0, integer=True), default=0,
                     help="Follow this process (and its children) instead of a command."),
        click.option("--duration", type=Number(0), default=0.0, metavar="S",
                     help="Stop after S seconds."),
        click.option("--file", "only_file", metavar="PATH",
                     help="Trace only this file (its device and inode, filtered in the "
                          "kernel)."),
        click.option("--all-files", is_flag=True,
                     help="Also trace page-cache files (the ->page_mkwrite path), "
                          "not only DAX files."),
        attach_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


# `record`, `check`, `top` and `exporter`: how hooks are attached (probeplan.apply_attach).
attach_option = click.option(
    "--attach", type=click.Choice(["auto", "kprobe", "fentry"]), default="auto",
    envvar="PFNTRACE_ATTACH", show_default=True,
    help="auto: fentry/fexit (BPF trampolines) where the kernel and bcc allow, kprobes "
         "elsewhere; kprobe: kprobes/kretprobes only; fentry: fail unless every hook "
         "can be fentry/fexit.")


def bpf_stats_option(shows):
    """`record` and `top`: the kernel's BPF run-time statistics, off unless
    asked for (while on, every BPF program run on the machine pays two clock
    reads, not only pfntrace's).  --no-bpf-stats is kept: it was top's way
    of turning them off when they were on by default."""
    return click.option(
        "--bpf-stats/--no-bpf-stats", default=False,
        help="Have the kernel count BPF programs' run time while running (two clock "
             "reads a run of every BPF program on the machine), to " + shows + ".")


def lost_reasons(trailer):
    """' (ring full 3, ...)' when anything was not seen, else ''."""
    why = ", ".join("%s %d" % (k.replace("_", " "), v)
                    for k, v in sorted((trailer.get("blind") or {}).items()) if v)
    return " (%s)" % why if why else ""


def _watched_mount(path):
    """(path, major, minor) of a DAX mount, or Fail with the reason."""
    from pfntrace.doctor import dax_mounts, device_dax
    from pfntrace.kernel.statx import statx

    real = os.path.realpath(path)
    try:
        st = statx(real)
    except OSError as e:
        raise Fail("--mount %s: %s" % (path, e.strerror))
    with open("/proc/self/mountinfo") as f:
        mounted = {m[0]: m for m in dax_mounts(f.read())}
    if real not in mounted:
        raise Fail("--mount %s is not a DAX mount (no dax mount option on %s)" % (path, real))
    if device_dax(st["dev_major"], st["dev_minor"]) is False:
        raise Fail("--mount %s is mounted with %s but its device %d:%d cannot do DAX"
                   % (path, mounted[real][2], st["dev_major"], st["dev_minor"]))
    return (real, st["dev_major"], st["dev_minor"])


def _watched_file(path):
    """(major, minor, ino) of one file to trace, or Fail."""
    from pfntrace.kernel.statx import statx

    try:
        st = statx(path)
    except OSError as e:
        raise Fail("--file %s: %s" % (path, e.strerror))
    return st["dev_major"], st["dev_minor"], st["ino"]


def prepare(output, mounts, pid, duration, all_files, command_argv, only_file=None,
            attach="auto", bpf_stats=False, every_event=False):
    """Check everything that can be checked before compiling; return a
    Recorder with its file created and its tracer started."""
    from pfntrace import doctor, recorder, tracer

    if command_argv and command_argv[0].startswith("-") and not shutil.which(command_argv[0]):
        # COMMAND takes unknown options as its own (ignore_unknown_options):
        # a dash first is a mistyped option of ours, not a program.
        raise click.NoSuchOption(command_argv[0], ctx=click.get_current_context(silent=True))
    if command_argv and pid:
        raise Fail("give either -p PID or a COMMAND, not both")
    if command_argv and shutil.which(command_argv[0]) is None:
        raise Fail("command not found: %s" % command_argv[0])
    if pid and not os.path.exists("/proc/%d" % pid):
        raise Fail("no process with pid %d" % pid)
    if duration < 0:
        raise Fail("--duration must be positive")
    blocker = doctor.record_blocker()
    if blocker:
        raise Fail(blocker)
    watched = [_watched_mount(m) for m in mounts]
    target = _watched_file(only_file) if only_file else None
    if target and watched and (target[0], target[1]) not in [(m[1], m[2]) for m in watched]:
        raise Fail("--file %s is not on any --mount given" % only_file)
    output = output or DEFAULT_NAME
    plan = build_plan(attach, all_files)
    options = recorder.RecordOptions(
        output=output, command=list(command_argv), pid=pid, duration=duration,
        mounts=watched, all_files=all_files, only_file=only_file,
        status=sys.stderr.isatty(), bpf_stats=bpf_stats)
    devs = [(m[1], m[2]) for m in watched]
    if target:
        devs = [target[:2]]
    tr = tracer.Tracer(plan, follow=bool(command_argv or pid),
                       devs=[tracer.kernel_dev(*d) for d in devs],
                       ino=target[2] if target else 0, all_files=all_files,
                       every_event=every_event)
    rec = recorder.Recorder(tr, plan, options)
    from pfntrace.recording import RecordingError

    try:
        rec.open()
    except RecordingError as e:
        raise Fail(str(e))
    try:
        tr.start()
    except tracer.TracerError as e:
        rec.abort()
        raise Fail(str(e))
    except BaseException:
        rec.abort()
        raise
    # The header was written before attaching: statuses changed by a failed
    # attach are kept in the trailer's copy of the plan.
    return rec


def run(rec, keep=True):
    """rec.run(), with a failed write (full disk, I/O error) told in one
    line: the blocks written before it stay readable, and the line says how
    much that is (unless the file is a temporary one, removed after)."""
    from pfntrace.recording import RecordingError

    try:
        return rec.run()
    except RecordingError as e:
        if not keep:
            raise Fail(str(e)) from None
        w = rec.writer
        kept = w.events_written if w is not None else 0
        raise Fail("%s; %s keeps the %d events written before (it reads as truncated)"
                   % (e, rec.opt.output, kept)) from None
    finally:
        rec.tracer.close()


def build_plan(attach="auto", all_files=False, counting=False):
    """The probe plan here, each hook's attach mechanism chosen by attach
    (Fail, one line, when --attach fentry cannot be honoured); the
    page-cache handlers only with all_files; counting: top's, without the
    hooks its counts do not use."""
    from pfntrace import probeplan
    from pfntrace.kernel import btf, kallsyms, tracefs

    try:
        ts = tracefs.ensure_mounted()
    except tracefs.TracefsError:
        ts = None
    try:
        b = btf.Btf.load()
    except btf.BtfError:
        b = None
    plan = probeplan.build_plan(kallsyms.Kallsyms.load(), b, ts)
    offsets = plan.get("offsets") or {}
    plan["huge_fault_arg_is_order"] = bool(offsets.get("HUGE_FAULT_ARG_IS_ORDER", 1))
    probeplan.apply_scope(plan, all_files)
    if counting:
        probeplan.apply_counting(plan)
    try:
        probeplan.apply_attach(plan, attach)
    except ValueError as e:
        raise Fail(str(e)) from None
    return plan


def print_plan(plan):
    from rich.console import Console

    from pfntrace.views import plan as plan_view

    table = plan_view.table(plan["hooks"], title="probe plan for %s" % plan["kernel"])
    clock = plan.get("clock") or {"status": "missing", "why": "?"}
    # What proves a fault CURRENT: without it such faults are UNDECIDED.
    table.add_row("kernel clock", clock["status"], clock["why"])
    table.add_row(*plan_view.attach_row(plan))
    Console(markup=False, emoji=False).print(table)


@click.command("record", context_settings={"ignore_unknown_options": True})
@record_options
@click.option("--plan", "show_plan", is_flag=True,
              help="Print the probe plan for this kernel and exit.")
@bpf_stats_option("keep pfntrace's own in the trailer and print it per probe at the end")
@click.option("--every-event", is_flag=True,
              help="Send each retried do_wp_page attempt and each fs_dax tracepoint as an "
                   "event of its own, as they happen, instead of counting them per file "
                   "and process in the kernel (about three times the events).")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def command(output, mounts, pid, duration, only_file, all_files, attach, show_plan, bpf_stats,
            every_event, cmd):
    """Record write faults of COMMAND (or -p PID, or the whole system).

    \b
    pfntrace record -o run.pft -- ./my-db-bench
    pfntrace record --mount /mnt/dax --duration 10
    """
    if show_plan:
        print_plan(build_plan(attach, all_files))
        return
    from pfntrace.bpfstats import probe_cost_line

    rec = prepare(output, mounts, pid, duration, all_files, cmd, only_file, attach, bpf_stats,
                  every_event)
    trailer = run(rec)
    click.echo("pfntrace: %d events, %d lost%s, written to %s"
               % (trailer["events"], trailer["lost"], lost_reasons(trailer), rec.opt.output),
               err=True)
    if bpf_stats:
        line = probe_cost_line(trailer.get("bpf_run_times") or {})
        click.echo(line or "pfntrace: no BPF run time counted (statistics unavailable, "
                   "or no probe ran)", err=True)
        click.echo("pfntrace: recorder CPU time %.3f s for %d events"
                   % (trailer["recorder_cpu_ns"] / 1e9, trailer["events"]), err=True)
    if cmd:
        sys.exit(trailer["exit_code"])
