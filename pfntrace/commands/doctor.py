"""`pfntrace doctor`: check this machine for everything pfntrace needs."""

import json
import sys

import click
from rich.console import Console
from rich.table import Table


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def command(as_json):
    """Check kernel, privileges, bcc, probes and DAX mounts.

    Exits 0 when `pfntrace record` can run here, 1 otherwise.
    """
    from pfntrace.doctor import run_checks

    checks, plan = run_checks()
    blockers = [c for c in checks if c.blocking and not c.ok]
    if as_json:
        click.echo(json.dumps({"record_can_run": not blockers,
                               "checks": [c.as_dict() for c in checks],
                               "plan": plan}, indent=2))
    else:
        _print_table(checks, blockers)
    sys.exit(1 if blockers else 0)


def _print_table(checks, blockers):
    console = Console()
    table = Table(show_lines=False)
    table.add_column("check")
    table.add_column("")
    table.add_column("detail")
    table.add_column("fix")
    for c in checks:
        if c.ok:
            mark = "[green]ok[/]"
        elif c.blocking:
            mark = "[bold red]BLOCKS[/]"
        else:
            mark = "[yellow]no[/]"
        table.add_row(c.name, mark, c.detail, c.fix)
    console.print(table)
    if blockers:
        console.print("[bold red]pfntrace record cannot run here:[/] %s" % blockers[0].fix)
    else:
        console.print("[green]pfntrace record can run here.[/]")
