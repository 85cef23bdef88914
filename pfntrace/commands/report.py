"""pfntrace report: what the write faults in a recording did to mtime/ctime."""

import contextlib
import errno
import os
import stat
import sys

import click

from pfntrace import correlate
from pfntrace.commands.common import Fail, Number, warn
from pfntrace.views import export

PIPE_WIDTH = 200


def open_recording(path):
    """Recording.open(path), with any failure turned into a one-line Fail."""
    from pfntrace.recording import Recording, RecordingError

    try:
        return Recording.open(path)
    except RecordingError as e:
        raise Fail(str(e)) from None
    except OSError as e:
        raise Fail("cannot read %s: %s" % (path, e.strerror or e)) from None


def _console(**kw):
    from rich.console import Console

    class PipeConsole(Console):
        def on_broken_pipe(self):
            # rich exits 1 without a word; the CLI says it in one line.
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    # Paths and process names come from the recording: "[/]" or ":x:" in a
    # file name is text, not rich markup or an emoji code.
    return PipeConsole(markup=False, emoji=False, **kw)


def _keep_raw_names():
    """File names that are not UTF-8 come out of the recording with
    surrogate escapes (os.fsdecode): write them back as the bytes they were,
    as ls does, instead of failing on them."""
    try:
        sys.stdout.reconfigure(errors="surrogateescape")
    except (AttributeError, ValueError):
        pass


def warn_recording(an, path):
    """Every problem the reader found, on stderr: a count read from a
    recording with blocks missing, repeated or cut off must not pass for
    the whole truth."""
    for line in an.warning_lines():
        warn("%s: %s" % (path, line))


@click.command("report")
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document instead.")
@click.option("--csv", "csv_table", type=click.Choice(export.TABLES),
              help="Print one table as CSV to stdout.")
@click.option("--file", "file_substr", metavar="PATH_SUBSTRING",
              help="Only files whose path contains this.")
@click.option("--pid", type=Number(0, integer=True),
              help="Only this process (thread group id).")
@click.option("--comm", help="Only processes with this command name.")
@click.option("--verdict", type=click.Choice(correlate.VERDICTS, case_sensitive=False),
              help="Only write faults with this verdict.")
@click.option("--events", is_flag=True, help="List every write fault.")
@click.option("--perfetto", "perfetto_out", metavar="OUT.json",
              help="Write a timeline of the write faults (Chrome trace-event JSON, for "
              "ui.perfetto.dev) to OUT.json ('-': stdout) instead of the report.")
def command(file, as_json, csv_table, file_substr, pid, comm, verdict, events, perfetto_out):
    """Correlate a recording: for every write fault, did mtime/ctime move?"""
    given = [name for name, on in (("--json", as_json), ("--csv", csv_table),
                                   ("--perfetto", perfetto_out is not None)) if on]
    if len(given) > 1:
        raise click.UsageError("%s are exclusive" % " and ".join(given))
    if perfetto_out is not None and events:
        raise click.UsageError("--events and --perfetto are exclusive")
    sel = correlate.Selection(file=file_substr, pid=pid, comm=comm, verdict=verdict)
    if perfetto_out is not None:
        return _perfetto(file, sel, perfetto_out)
    rec = open_recording(file)
    try:
        keep = bool(events or csv_table == "events")
        with _decoding(file):
            an = correlate.analyse(rec, keep_faults=keep, selection=sel)
    finally:
        rec.close()
    warn_recording(an, file)
    _keep_raw_names()
    out = sys.stdout
    if as_json:
        out.write(export.to_json(an, events=events) + "\n")
    elif csv_table:
        export.write_csv(an, csv_table, out)
    else:
        from pfntrace.views import report

        # Piped or redirected: no terminal to fit, so don't fold paths into
        # pieces that grep cannot find.
        console = _console() if sys.stdout.isatty() else _console(width=PIPE_WIDTH)
        report.render(console, an, events=events, source=file)
    sys.stdout.flush()


def _has_fd(out):
    """Whether out is a real file a forked process can write too."""
    try:
        out.fileno()
    except (AttributeError, OSError, ValueError):   # io.UnsupportedOperation is both
        return False
    return True


@contextlib.contextmanager
def _decoding(file):
    """A recording that passes open() but not decoding: one line."""
    from pfntrace.recording import RecordingError

    try:
        yield
    except (RecordingError, ValueError) as e:
        raise Fail("%s: %s" % (file, e)) from None


def _perfetto(file, sel, target):
    """report --perfetto: the trace is written while the recording is
    correlated (correlate.stream), never held whole in memory."""
    from pfntrace.views import perfetto

    rec = open_recording(file)
    try:
        if target == "-":
            out, name = sys.stdout, None
        else:
            try:
                out = open(target, "w", encoding="utf-8", errors="surrogateescape")
            except OSError as e:
                raise Fail("cannot write %s: %s" % (target, e.strerror or e)) from None
            name = target
        try:
            with _decoding(file):
                an, batches = correlate.stream_batches(rec, selection=sel)
                if _has_fd(out):
                    counts = perfetto.write_forked(out, an, batches)
                else:           # an in-memory stdout (tests): one process
                    counts = perfetto.write(out, an, batches)
            if name is not None:
                out.close()
        except OSError as e:
            if name is None:
                raise               # stdout: the CLI says it ("cannot write output: ...")
            _discard(out, target)
            raise Fail("cannot write %s: %s" % (target, e.strerror or e)) from None
        except BaseException:
            if name is not None:
                _discard(out, target)
            raise
    finally:
        rec.close()
    warn_recording(an, file)
    if name is not None:
        exposure = "" if an.exposure is None else (
            ", %d write-exposure windows, %d exposed stats" % (
                counts["exposure_windows"], counts["exposed_observations"]))
        click.echo("%s: %d write faults, %d timestamp moves, %d counter samples%s (open it in "
                   "https://ui.perfetto.dev)" % (name, counts["slices"], counts["instants"],
                                                  counts["counter_samples"], exposure), err=True)


def _discard(out, target):
    """A trace that could not be written whole is removed, not left cut
    short (unless it is no regular file: /dev/full, a FIFO)."""
    try:
        regular = stat.S_ISREG(os.fstat(out.fileno()).st_mode)
    except (OSError, ValueError):
        regular = False
    with contextlib.suppress(OSError):
        out.close()
    if regular:
        with contextlib.suppress(OSError):
            os.unlink(target)
