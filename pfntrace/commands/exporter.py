"""`pfntrace exporter`: top's in-kernel counters as Prometheus metrics."""

import os
import platform
import signal
import threading
import time

import click

from pfntrace.commands.common import (Fail, Number, Quit, attach_option, build_plan, on_term,
                                      start_counters, watched_mount)

# Prometheus's list of default exporter ports (9100-9999) has been full since
# 2023: any port in it is some registered exporter's.  10813 is above it,
# below the Linux ephemeral range (32768-60999), and no service this
# kernel-tracing crowd runs beside pfntrace (kubelet 10250-10259, zabbix
# 10050/10051, webmin 10000) uses it.
DEFAULT_PORT = 10813
DEFAULT_LISTEN = ":%d" % DEFAULT_PORT


def parse_listen(text):
    """(host, port) of a --listen address: HOST:PORT, [IPV6]:PORT or :PORT
    (every IPv4 address).  Fail on anything else."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise Fail("--listen %s: want HOST:PORT, [IPV6]:PORT or :PORT" % text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise Fail("--listen %s: an IPv6 address goes in brackets: [%s]:PORT" % (text, host))
    try:
        number = int(port, 10)
    except ValueError:
        number = -1
    if not 0 < number < 65536:
        raise Fail("--listen %s: the port must be 1 to 65535, not %r" % (text, port))
    return host or "0.0.0.0", number


def _check_textfile_dir(directory):
    if not os.path.isdir(directory):
        raise Fail("--textfile %s: not a directory" % directory)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise Fail("--textfile %s: not writable" % directory)


def _serve(reg, host, port):
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host, registry=reg)
    except OSError as e:
        raise Fail("cannot listen on %s:%d: %s" % (host, port, e.strerror or e))


def _textfile_loop(reg, directory, interval, count):
    from prometheus_client.exposition import generate_latest

    from pfntrace.views.metrics import TEXTFILE_NAME, write_atomically

    written = 0
    next_t = time.monotonic()
    stops = {signal.SIGTERM, signal.SIGINT}
    while count is None or written < count:
        # A stop that comes mid-write waits for the write to end: the file
        # whole and no temporary file left (the lab once found one).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            write_atomically(directory, TEXTFILE_NAME, generate_latest(reg))
        except OSError as e:
            raise Fail("--textfile %s: %s" % (directory, e.strerror or e))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        written += 1
        if count is not None and written >= count:
            break
        next_t += interval
        time.sleep(max(0.0, next_t - time.monotonic()))


@click.command("exporter")
@click.option("--listen", default=None, metavar="[HOST]:PORT",
              help="Serve /metrics here, like --web.listen-address  [default: %s]"
                   % DEFAULT_LISTEN)
@click.option("--textfile", metavar="DIR", default=None,
              help="Instead of serving, write DIR/pfntrace.prom every interval (atomically: "
                   "a temporary file renamed), for node_exporter's textfile collector.")
@click.option("--interval", type=Number(0, hi=86400, above_lo=True), default=15.0,
              metavar="S", show_default=True, help="With --textfile: write every S seconds.")
@click.option("--mount", "mounts", multiple=True, metavar="PATH",
              help="Count only files on this DAX mount (repeatable).")
@click.option("--all-files", is_flag=True,
              help="Also count page-cache files (->page_mkwrite), not only DAX files.")
@click.option("--per-file", is_flag=True,
              help="Also export per-file series (a path label; mind the cardinality).")
@click.option("--max-files", type=Number(1, hi=100000, integer=True), default=100,
              show_default=True, metavar="N",
              help="With --per-file: only the N files with the most write faults.")
@click.option("-n", "--count", type=Number(1, integer=True), default=None, metavar="N",
              hidden=True, help="With --textfile: exit after N writes.")
@attach_option
def command(listen, textfile, interval, mounts, all_files, per_file, max_files, count, attach):
    """Export write-fault counters to Prometheus.

    The same counters as `pfntrace top`, kept in the kernel and read on
    every scrape: write faults by mount, filesystem and kind, verdicts by
    mount, the handler latency histogram, lost events and build info.  No
    inode, pid or path labels unless --per-file.

    \b
    pfntrace exporter                           # :10813/metrics
    pfntrace exporter --listen 127.0.0.1:10813 --mount /mnt/dax
    pfntrace exporter --textfile /var/lib/prometheus/node-exporter --interval 15
    """
    from pfntrace import __version__, aggregate, doctor, tracer
    from pfntrace.views import metrics

    if textfile is not None and listen is not None:
        raise Fail("--listen and --textfile exclude each other: serve, or write a file")
    if textfile is not None:
        _check_textfile_dir(textfile)
        host = port = None
    else:
        host, port = parse_listen(listen or DEFAULT_LISTEN)
    blocker = doctor.record_blocker()
    if blocker:
        raise Fail(blocker)
    watched = [watched_mount(m) for m in mounts]
    plan = build_plan(attach, all_files, counting=True)
    tr = tracer.Tracer(plan, devs=[tracer.kernel_dev(m[1], m[2]) for m in watched],
                       all_files=all_files, aggregate=True)
    old_term = signal.signal(signal.SIGTERM, on_term)
    reader = None
    try:
        start_counters(tr, plan)
        reader = aggregate.Reader(tr, interval_ns=int(interval * 1e9), bpf_stats=False)
        roots = [m[0] for m in watched]
        resolver = aggregate.PathResolver(roots) if per_file else None
        kernel = plan.get("kernel") or platform.release()
        lock = threading.Lock()   # the HTTP server may scrape from two threads

        def read():
            with lock:
                snap = reader.read()
                with open("/proc/self/mountinfo") as f:
                    mounted = metrics.dax_mounts_by_dev(f.read())
                paths = resolver.resolve(snap.files) if resolver else None
            return metrics.families(snap, mounted, __version__, kernel,
                                    per_file=max_files if per_file else 0, paths=paths)

        reg = metrics.registry(read)
        if textfile is not None:
            click.echo("pfntrace: exporter: writing %s every %gs"
                       % (os.path.join(textfile, metrics.TEXTFILE_NAME), interval), err=True)
            _textfile_loop(reg, textfile, interval, count)
        else:
            _serve(reg, host, port)
            click.echo("pfntrace: exporter: serving http://%s:%d/metrics"
                       % ("[%s]" % host if ":" in host else host, port), err=True)
            while True:
                time.sleep(3600)
    except (KeyboardInterrupt, Quit):
        pass
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if reader is not None:
            reader.close()
        tr.close()
