"""The pfntrace command line: one click group, one module per command."""

import importlib
import sys

import click

from pfntrace import __version__
from pfntrace.commands import COMMANDS
from pfntrace.commands.common import one_line, output_failed

# click >= 8.2 raises this for a group run without a command: it is help.
_NO_ARGS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


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
                output_failed(e)
        except _NO_ARGS_HELP as e:
            e.show()             # the help text, as click gives it
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(one_line(e), err=True)
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
            output_failed(e)

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
