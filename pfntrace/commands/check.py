"""`pfntrace check`: xfstests generic/080 for any workload.

Records COMMAND, judges every write fault, and says by its exit code
whether all of them left the file's timestamps where the kernel must leave
them, so it can sit in a CI script:

  0  write faults were seen, every one UPDATED or CURRENT (or UNDECIDED
     without --strict), and nothing was lost
  1  findings: a MISSED or NO_NOTIFIER fault (with --strict, UNDECIDED too;
     with --invisible, a write the last stat before it cannot see; with
     --exposed, a stat made while a page stayed writable after its fault)
  2  pfntrace could not run, or did not see everything: events lost, a
     return probe missed, a per-thread state not made, the recording not intact
  3  COMMAND failed and there was no finding: no verdict
  4  no write fault was seen at all (--allow-empty makes that 0)
"""

import os
import sys
import tempfile

import click

from pfntrace.commands.common import Fail, lost_reasons, record_options
from pfntrace.commands.session import prepare, run

EXIT_FINDINGS = 1
EXIT_BLIND = 2
EXIT_COMMAND_FAILED = 3
EXIT_EMPTY = 4


@click.command("check", context_settings={"ignore_unknown_options": True})
@record_options
@click.option("--strict", is_flag=True,
              help="Fail (exit 1) on UNDECIDED faults too: faults the data could not judge.")
@click.option("--allow-empty", is_flag=True,
              help="Exit 0, not 4, when the command made no write fault at all.")
@click.option("--invisible", "fail_invisible", is_flag=True,
              help="Fail (exit 1) on invisible writes too: write faults after which mtime "
                   "and ctime still equal what a stat (by any process) saw before them.")
@click.option("--exposed", "fail_exposed", is_flag=True,
              help="Fail (exit 1) on exposed stats too: a stat (by any process) made while "
                   "a page of the file was still writable after its stamping fault, so "
                   "later stores change the data under the mtime it saw.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def command(output, mounts, pid, duration, only_file, all_files, attach, strict, allow_empty,
            fail_invisible, fail_exposed, cmd):
    """Run COMMAND and fail (exit 1) if any write fault left mtime/ctime stale.

    \b
    Exit codes: 0 all judged right, 1 findings (--invisible: invisible writes
    too; --exposed: exposed stats too), 2 pfntrace could not run or lost
    events, 3 COMMAND failed without a finding, 4 no write fault seen.
    \b
    pfntrace check -- xfs_io -c "mmap 0 4k" -c "mread 0 4k" -c "mwrite 0 4k" /mnt/dax/f
    pfntrace check -o evidence.pft -- ./db-test
    """
    from pfntrace import correlate
    from pfntrace.findings import finding_line, findings, invisible_line
    from pfntrace.recording import Recording, RecordingError

    keep = output is not None
    if not keep:
        fd, output = tempfile.mkstemp(prefix="pfntrace-check-", suffix=".pft")
        os.close(fd)
        os.unlink(output)  # the recorder creates it, mode 0600
    try:
        rec = prepare(output, mounts, pid, duration, all_files, cmd, only_file, attach)
        trailer = run(rec, keep)
        try:
            with Recording.open(output) as recording:
                an = correlate.analyse(recording, keep_faults=False)
        except RecordingError as e:
            raise Fail(str(e)) from None
    finally:
        if not keep and os.path.exists(output):
            os.unlink(output)
    s = an.summary()
    lines = findings(an)
    undecided = [finding_line(f) for f in an.undecided]
    invisible = [invisible_line(f) for f in an.invisible]
    exposed = _exposed_lines(an)
    for line in lines + (undecided if strict else []) + (invisible if fail_invisible else []) \
            + (exposed if fail_exposed else []):
        click.echo(line)
    verdicts = "  ".join("%s %d" % kv for kv in s["verdicts"].items() if kv[1])
    click.echo("pfntrace check: %d write faults (pfn_mkwrite %d, page_mkwrite %d, pmd %d, "
               "first-touch %d, no notifier %d)%s%s" % (
                   s["write_faults"], s["pfn_mkwrite"], s["page_mkwrite"], s["pmd"],
                   s["first_touch"], s["no_notifier"], ": " + verdicts if verdicts else "",
                   (", recording kept in %s" % output) if keep else ""), err=True)
    if s["getattr_probed"]:
        click.echo("pfntrace check: %d invisible writes (mtime and ctime as the last stat "
                   "before them saw them)%s" % (s["invisible_writes"], "" if fail_invisible
                                                or not invisible else "; --invisible fails "
                                                "on them"), err=True)
    if s["getattr_probed"] and an.exposure is not None:
        click.echo("pfntrace check: %d exposed stats (a stat while a page stayed writable "
                   "after its stamping fault: later stores change the data under the mtime "
                   "it saw)%s" % (len(exposed), "" if fail_exposed or not exposed
                                  else "; --exposed fails on them"), err=True)
    loud = an.multigrain_warning()
    if loud:
        click.echo("pfntrace check: WARNING: %s" % loud, err=True)
    for line in an.warnings:
        click.echo("pfntrace check: warning: %s" % line, err=True)
    blind = ""
    if s["lost"]:
        blind = "%d events or faults were not seen%s" % (s["lost"], lost_reasons(trailer))
    elif s["truncated"] or an.warnings:
        # Blocks missing, repeated or after the trailer: the counts are not
        # the workload's, so neither is a pass.
        blind = "the recording is not intact: %s" % (
            s["truncation_reason"] or an.warnings[0])
    if blind:
        click.echo("pfntrace check: %s; faults may be missing" % blind, err=True)
    if lines or (strict and undecided) or (fail_invisible and invisible) \
            or (fail_exposed and exposed):
        sys.exit(EXIT_FINDINGS)
    if blind:
        raise _Blind("check: " + blind)
    if fail_invisible and not s["getattr_probed"]:
        raise _Blind("check: --invisible needs a probe on vfs_getattr_nosec, which this "
                     "kernel does not offer (see pfntrace record --plan)")
    if fail_exposed and not (s["getattr_probed"] and an.exposure is not None):
        raise _Blind("check: --exposed needs probes on vfs_getattr_nosec and the closes of "
                     "write-exposure windows, which this kernel does not offer (see "
                     "pfntrace record --plan)")
    if undecided:
        click.echo("pfntrace check: %d write faults UNDECIDED (%s); --strict fails on them"
                   % (len(undecided), an.undecided[0].detail), err=True)
    code = trailer.get("exit_code")
    if code:
        # No finding, but the workload did not do what it should have: a
        # pass would be a lie.
        raise _CommandFailed("check: %s exited with %d: no verdict" % (cmd[0], code))
    if not s["write_faults"] and not allow_empty:
        raise _Empty("check: %s made no write fault that pfntrace could see (--allow-empty "
                     "if that is expected)" % cmd[0])


def _exposed_lines(an):
    from pfntrace import correlate
    from pfntrace.findings import exposed_line

    e = an.exposure
    if e is None:
        return []
    names = {(f.dev, f.ino): f.shown_path for f in an.files}
    return [exposed_line(ob, names.get(ob.key) or correlate.file_key(*ob.key), e.end_ns)
            for ob in e.observations]


class _Blind(Fail):
    exit_code = EXIT_BLIND


class _CommandFailed(Fail):
    exit_code = EXIT_COMMAND_FAILED


class _Empty(Fail):
    exit_code = EXIT_EMPTY
