"""A recording session, as `record` and `check` run one: every check that
can be made before compiling, then the tracer started and the recording
written until the command, the process or the duration ends."""

import os
import shutil
import sys

import click

from pfntrace.commands.common import Fail, build_plan, watched_file, watched_mount
from pfntrace.recording import DEFAULT_NAME, RecordingError


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
    watched = [watched_mount(m) for m in mounts]
    target = watched_file(only_file) if only_file else None
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
