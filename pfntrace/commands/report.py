"""pfntrace report: what the write faults in a recording did to mtime/ctime."""

import errno
import os
import sys

import click

from pfntrace import correlate
from pfntrace.cli import Fail, Number, warn
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
def command(file, as_json, csv_table, file_substr, pid, comm, verdict, events):
    """Correlate a recording: for every write fault, did mtime/ctime move?"""
    if as_json and csv_table:
        raise click.UsageError("--json and --csv are exclusive")
    rec = open_recording(file)
    try:
        sel = correlate.Selection(file=file_substr, pid=pid, comm=comm, verdict=verdict)
        keep = bool(events or csv_table == "events")
        try:
            an = correlate.analyse(rec, keep_faults=keep, selection=sel)
        except Exception as e:   # a recording that passes open() but not decoding
            from pfntrace.recording import RecordingError

            if isinstance(e, (RecordingError, ValueError)):
                raise Fail("%s: %s" % (file, e)) from None
            raise
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
