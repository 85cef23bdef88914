"""The pfntrace command line: one click group, one module per command."""

import importlib

import click

from pfntrace import __version__
from pfntrace.commands import COMMANDS


class Fail(click.ClickException):
    """A one-line error: printed as 'pfntrace: <message>', exit code 2."""

    exit_code = 2

    def show(self, file=None):
        click.echo("pfntrace: %s" % self.format_message(), err=True)


class _LazyGroup(click.Group):
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
