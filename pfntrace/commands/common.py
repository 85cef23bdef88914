"""What the commands share: the one-line error, number options, the
options and checks of the tracing commands (record, check, top, exporter),
the probe plan they build, and how they stop on SIGTERM.  cli.py wires the
commands; the commands import from here and from session.py, never
from each other."""

import errno
import math
import os
import sys

import click


class Fail(click.ClickException):
    """A one-line error: printed as 'pfntrace: <message>', exit code 2."""

    exit_code = 2

    def show(self, file=None):
        click.echo(one_line(self), err=True)


# A message may quote a value from a recording or the command line: its
# control characters are shown escaped, so that the message stays one line.
_ESCAPES = {c: "\\x%02x" % c for c in range(32)}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 127: "\\x7f"})


def warn(text):
    """'pfntrace: warning: <text>' on stderr, on one line."""
    click.echo("pfntrace: warning: %s" % text.translate(_ESCAPES), err=True)


# Errors writing our own output (stdout to a full disk, a closed pipe): said
# in one line, whatever command was writing.
_OUTPUT_ERRNOS = (errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def one_line(e):
    """'pfntrace: ...' for any click error, usage errors included: click's
    own form is a usage block, a hint and the error, four lines."""
    if isinstance(e, Fail):
        return "pfntrace: %s" % e.format_message().translate(_ESCAPES)
    names = []
    ctx = getattr(e, "ctx", None)
    while ctx is not None and ctx.parent is not None:   # not the program's own name
        names.insert(0, ctx.info_name)
        ctx = ctx.parent
    where = " ".join(names) + ": " if names else ""
    message = e.format_message().translate(_ESCAPES)
    return "pfntrace: %s%s" % (where, message)


def _silence_stdout():
    """After a failed write, stdout's buffer still holds the rest: point fd
    1 at /dev/null so the flush at exit does not print a traceback."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):   # no real fd (a test's runner)
        pass


def output_failed(e):
    if e.errno not in _OUTPUT_ERRNOS:
        raise e
    _silence_stdout()
    raise Fail("cannot write output: %s" % os.strerror(e.errno)) from None


class Number(click.ParamType):
    """A finite number in [lo, hi] (lo excluded when above_lo): float('nan')
    compares false with everything and float('inf') overflows int(), so both
    are refused here, with the option's name, before any command runs."""

    name = "number"

    def __init__(self, lo=None, hi=None, above_lo=False, integer=False):
        self.lo, self.hi, self.above_lo, self.integer = lo, hi, above_lo, integer

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            x = value
        else:
            try:
                x = int(value, 10) if self.integer else float(value)
            except (TypeError, ValueError):
                x = None
            if x is None or not math.isfinite(x):
                self.fail("must be %s, not %s" % (self.describe(), value), param, ctx)
        low = self.lo is not None and (x <= self.lo if self.above_lo else x < self.lo)
        if low or (self.hi is not None and x > self.hi):
            self.fail("must be %s, not %s" % (self.describe(), value), param, ctx)
        return x

    def describe(self):
        what = "an integer" if self.integer else "a finite number"
        low = self.lo is not None and ("above %s" if self.above_lo else "at least %s") % self.lo
        high = self.hi is not None and "at most %s" % self.hi
        if low and high and not self.above_lo:
            return "%s from %s to %s" % (what, self.lo, self.hi)
        return " ".join([what] + [" and ".join(x for x in (low, high) if x)])


def record_options(f):
    """The options `record` and `check` share."""
    from pfntrace.recording import DEFAULT_NAME

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


def watched_mount(path):
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


def watched_file(path):
    """(major, minor, ino) of one file to trace, or Fail."""
    from pfntrace.kernel.statx import statx

    try:
        st = statx(path)
    except OSError as e:
        raise Fail("--file %s: %s" % (path, e.strerror))
    return st["dev_major"], st["dev_minor"], st["ino"]


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


def start_counters(tr, plan):
    """Start a Tracer(aggregate=True): Fail when bcc cannot, and when a
    probe the plan expected was refused by the kernel (a verifier
    rejection, typically): the counts would be silently wrong."""
    from pfntrace import tracer

    try:
        tr.start()
    except tracer.TracerError as e:
        raise Fail(str(e))
    failed = [h for h in plan["hooks"] if h.get("why", "").startswith("attach failed")]
    if failed:
        raise Fail("could not attach %s %s: %s"
                   % (failed[0]["kind"], failed[0]["hook"], failed[0]["why"]))


class Quit(Exception):
    """Raised by on_term: a SIGTERM ends top and the exporter like Ctrl-C."""


def on_term(signum, frame):
    raise Quit()
