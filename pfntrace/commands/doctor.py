"""`pfntrace doctor`: check this machine for everything pfntrace needs."""

import json
import sys

import click


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
        from rich.console import Console

        from pfntrace.views import doctor as view

        view.render(Console(), checks)
    sys.exit(1 if blockers else 0)
