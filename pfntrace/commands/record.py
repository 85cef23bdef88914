"""`pfntrace record`: trace write faults into a recording file."""

import sys

import click

from pfntrace.commands.common import bpf_stats_option, build_plan, lost_reasons, record_options
from pfntrace.commands.session import prepare, run


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
