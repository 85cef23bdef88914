"""`pfntrace lab`: boot a Debian kernel with emulated pmem and run a command on DAX."""

import sys

import click

from pfntrace.commands.common import Fail, Number
from pfntrace.lab import kernels, vm


@click.group("lab")
def command():
    """Run commands on a real DAX mount inside a QEMU guest.

    The guest boots a Debian kernel (6.1, 6.12, or `newest`: the newest in
    Debian's archive, fetched into the cache) straight from its vmlinux,
    sees this machine's root read-only over 9p (writes go to a tmpfs
    overlay), makes a DAX filesystem on emulated persistent memory and
    mounts it at /mnt/dax.
    """


@command.command("run", context_settings={"ignore_unknown_options": True})
@click.option("--kernel", default="6.12", show_default=True,
              help="Lab kernel to boot: %s, or the release of the fetched one."
                   % ", ".join(kernels.aliases()))
@click.option("--fs", type=click.Choice(["ext4", "xfs"]), default="ext4", show_default=True,
              help="Filesystem made on the pmem device and mounted with DAX.")
@click.option("--pmem", type=click.Choice(["memmap", "nvdimm"]), default="memmap",
              show_default=True,
              help="memmap: the memmap=SIZE!1G kernel argument; nvdimm: QEMU's emulated "
                   "NVDIMM, made fsdax with ndctl.")
@click.option("--size", default="512M", show_default=True, help="Size of the pmem device.")
@click.option("--results", type=click.Path(file_okay=False), default=".",
              help="Host folder shared read-write at the same path inside  [default: .]")
# Above 0 (a guest needs time to boot) and at most a week: nan, inf or 0
# would start QEMU only to kill it, and blame the guest.
@click.option("--timeout", type=Number(0, 7 * 86400, above_lo=True), default=900,
              show_default=True,
              help="Seconds before a guest that has not finished is killed.")
@click.option("--quiet", "-q", is_flag=True, help="Do not print the boot timing line.")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def run_command(kernel, fs, pmem, size, results, timeout, quiet, cmd):
    """Boot the lab and run CMD as root on the DAX mount; exit with its code.

    Example: pfntrace lab run --kernel 6.12 --fs xfs -- stat -f /mnt/dax
    """
    try:
        cfg = vm.LabConfig(kernel=kernel, fs=fs, pmem=pmem, size_mb=vm._parse_size(size),
                           results=results, timeout=timeout)
        result = vm.run(cfg, list(cmd))
    except vm.LabCommandNotFound as e:
        click.echo("pfntrace: lab: %s" % e, err=True)
        sys.exit(127)
    except kernels.LabError as e:
        raise Fail("lab: %s" % e)
    if not quiet:
        click.echo(
            "lab: %s %s on %s pmem: userspace at %.1f s, DAX mount ready +%.1f s, "
            "command %.1f s, total %.1f s, exit %d"
            % (result.release, fs, pmem, result.boot_s, result.setup_s, result.command_s,
               result.total_s, result.exit_code),
            err=True,
        )
    sys.exit(result.exit_code)


@command.command("list")
def list_command():
    """Which lab kernels are there and usable, and what is missing."""
    usable = 0
    for alias in kernels.aliases():
        k = kernels.describe(alias)
        if k.usable:
            usable += 1
            where = ("fetched %s, %s" % (k.version, k.root)) if k.root else \
                "image %s, modules, headers" % k.image
            click.echo("%-6s %-24s usable  %s" % (alias, k.release, where))
        else:
            click.echo("%-6s %-24s MISSING %s" % (alias, k.release or "-", "; ".join(k.missing)))
    sys.exit(0 if usable else 1)


@command.command("fetch")
def fetch_command():
    """Fetch the newest Debian kernel (image, modules, headers) into the cache.

    Asks Debian's archive (unstable and trixie-backports, through the mirror
    this system's apt uses, with apt's state kept in the cache) for the newest
    linux-image-amd64 and unpacks its packages for `--kernel newest`.  Nothing
    is installed.  Idempotent.
    """
    from pfntrace.lab import newest

    try:
        record = newest.fetch(log=lambda line: click.echo("lab fetch: %s" % line, err=True))
    except kernels.LabError as e:
        raise Fail("lab fetch: %s" % e)
    click.echo("newest %s (%s, %s) in %s" % (record["release"], record["version"],
                                             record.get("suite", ""), record["root"]))
