"""`pfntrace check`: xfstests generic/080 for any workload.

Records COMMAND, judges every write fault, and exits 1 when any of them
left the file's timestamps stale (MISSED) or told nobody (NO_NOTIFIER), so
it can sit in a CI script.  Exit codes: 0 all faults accounted for, 1
findings, 2 pfntrace could not run, 3 COMMAND itself failed and there was
no finding (no verdict).
"""

import os
import sys
import tempfile

import click

from pfntrace.cli import Fail
from pfntrace.commands.record import prepare, record_options

EXIT_FINDINGS = 1
EXIT_COMMAND_FAILED = 3


@click.command("check", context_settings={"ignore_unknown_options": True})
@record_options
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def command(output, mounts, pid, duration, only_file, all_files, cmd):
    """Run COMMAND and fail (exit 1) if any write fault left mtime/ctime stale.

    \b
    pfntrace check -- xfs_io -c "mmap 0 4k" -c "mread 0 4k" -c "mwrite 0 4k" /mnt/dax/f
    pfntrace check -o evidence.pft -- ./db-test
    """
    from pfntrace import correlate
    from pfntrace.findings import findings
    from pfntrace.recording import Recording

    keep = output is not None
    if not keep:
        fd, output = tempfile.mkstemp(prefix="pfntrace-check-", suffix=".pft")
        os.close(fd)
        os.unlink(output)  # the recorder creates it, mode 0600
    try:
        rec = prepare(output, mounts, pid, duration, all_files, cmd, only_file)
        try:
            trailer = rec.run()
        finally:
            rec.tracer.close()
        with Recording.open(output) as recording:
            an = correlate.analyse(recording, keep_faults=False)
    finally:
        if not keep and os.path.exists(output):
            os.unlink(output)
    s = an.summary()
    lines = findings(an)
    for line in lines:
        click.echo(line)
    verdicts = "  ".join("%s %d" % kv for kv in s["verdicts"].items() if kv[1])
    click.echo("pfntrace check: %d write faults (pfn_mkwrite %d, page_mkwrite %d, pmd %d, "
               "first-touch %d)%s%s" % (
                   s["write_faults"], s["pfn_mkwrite"], s["page_mkwrite"], s["pmd"],
                   s["first_touch"], ": " + verdicts if verdicts else "",
                   (", recording kept in %s" % output) if keep else ""), err=True)
    if s["lost"]:
        click.echo("pfntrace check: warning: %d events were lost; faults may be missing"
                   % s["lost"], err=True)
    if lines:
        sys.exit(EXIT_FINDINGS)
    code = trailer.get("exit_code")
    if code:
        # No finding, but the workload did not do what it should have: a
        # pass would be a lie.
        raise _CommandFailed("check: %s exited with %d: no verdict" % (cmd[0], code))


class _CommandFailed(Fail):
    exit_code = EXIT_COMMAND_FAILED
