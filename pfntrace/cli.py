"""The pfntrace command line: one click group, one module per command."""

import errno
import importlib
import math
import os
import sys

import click

from pfntrace import __version__
from pfntrace.commands import COMMANDS


class Fail(click.ClickException):
    """A one-line error: printed as 'pfntrace: <message>', exit code 2."""

    exit_code = 2

    def show(self, file=None):
        click.echo(_one_line(self), err=True)


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


# click >= 8.2 raises this for a group run without a command: it is help.
_NO_ARGS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _one_line(e):
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


def _output_failed(e):
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


class _LazyGroup(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
            try:
                sys.stdout.flush()
            except OSError as e:
                _output_failed(e)
        except _NO_ARGS_HELP as e:
            e.show()             # the help text, as click gives it
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(_one_line(e), err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("pfntrace: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        # Here, not in main(): click's main() takes EPIPE for a quiet exit 1.
        try:
            return super().invoke(ctx)
        except OSError as e:
            _output_failed(e)


    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        return importlib.import_module(COMMANDS[name]).command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pfntrace")
def main():
    """See what write faults on a DAX mount really do.

    pfntrace traces the kernel's write-protect fault path (do_wp_page, the
    filesystem's ->pfn_mkwrite / ->page_mkwrite / ->huge_fault,
    file_update_time and the fs_dax tracepoints) and tells, for every write
    fault, whether the file's mtime and ctime moved.
    """
