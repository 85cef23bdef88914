"""`pfntrace exporter` scraped by a real Prometheus (Debian's), and its
textfile mode, on a real DAX mount.

The 23-page read-then-write workload makes 23 write-protect faults, all
through ->pfn_mkwrite; the kernel's own fs_dax tracepoints count them too
(daxtrace.py).  Prometheus's query API must return exactly that for the
mount's pfn_mkwrite series, and the handler-latency histogram's _count the
same; promtool must accept the exposition and the sample alert rules.
"""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

from daxtrace import DaxTrace
from guest import FS, MOUNT, PFNTRACE, WORKLOAD, figures, loopback_up, run, wait_for

pytestmark = pytest.mark.lab_on("6.12/ext4")   # the command's surface (conftest.py)

N = 23
ATTACH_TIMEOUT = 300     # bcc compile and attach under TCG, on a loaded host
READY_TIMEOUT = 240      # Prometheus under TCG
SCRAPE_TIMEOUT = 60
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(REPO, "contrib", "prometheus", "pfntrace-alerts.yml")
FAMILIES = {"pfntrace_write_faults", "pfntrace_verdicts", "pfntrace_handler_latency_seconds",
            "pfntrace_invisible_writes", "pfntrace_lost_events", "pfntrace_build_info"}


def _tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip("%s is not installed (Debian's prometheus package)" % name)
    return path


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _exporter(args, log):
    """Start `pfntrace exporter ARGS`, and wait for its line saying it runs."""
    t0 = time.monotonic()
    proc = subprocess.Popen(PFNTRACE + ["exporter", "--mount", MOUNT] + args,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))

    def started():
        if proc.poll() is not None:
            pytest.fail("exporter exited %s: %s" % (proc.returncode, open(log).read()))
        return "pfntrace: exporter:" in open(log).read()

    try:
        wait_for("the exporter to attach", started, ATTACH_TIMEOUT)
    except BaseException:
        _stop(proc)
        raise
    return proc, time.monotonic() - t0


def _workload(path):
    """The 23-page read-then-write, with the kernel's fs_dax count of its
    ->pfn_mkwrite faults beside; returns (fs_dax count, end wall time)."""
    trace = DaxTrace("pfntrace-exporter")
    with trace:
        w = run(WORKLOAD + ["read-then-write", path, str(N)])
    assert w.returncode == 0, w.stderr
    ended = time.time()
    counts, _ = trace.counts()
    return counts[(os.stat(path).st_ino, "pte_mkwrite")], ended


class Prometheus:
    def __init__(self, workdir, target_port):
        self.port = _free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        config = os.path.join(workdir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "  evaluation_interval: 1s\n"
                    "rule_files:\n  - %s\n"
                    "scrape_configs:\n  - job_name: pfntrace\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % (RULES, target_port))
        self.log = os.path.join(workdir, "prometheus.log")
        self.proc = subprocess.Popen(
            [_tool("prometheus"), "--config.file", config,
             "--storage.tsdb.path", os.path.join(workdir, "data"),
             "--web.listen-address", "127.0.0.1:%d" % self.port],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))

    def ready(self):
        if self.proc.poll() is not None:
            pytest.fail("prometheus exited %s: %s"
                        % (self.proc.returncode, open(self.log).read()[-3000:]))
        try:
            return _get(self.url + "/-/ready", timeout=5)[0] == 200
        except OSError:
            return False

    def _query(self, expr):
        status, body = _get(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", body
        return data["data"]["result"]

    def query(self, expr):
        """[(labels, value)] of an instant query."""
        return [(r["metric"], float(r["value"][1])) for r in self._query(expr)]

    def samples(self, expr):
        """[(timestamp, value)] of a range selector's one series."""
        return [(float(ts), float(v)) for r in self._query(expr) for ts, v in r["values"]]

    def value(self, expr):
        got = self.query(expr)
        assert len(got) == 1, (expr, got)
        return got[0][1]

    def rules(self):
        return json.loads(_get(self.url + "/api/v1/rules")[1])["data"]["groups"]

    def close(self):
        return _stop(self.proc)


def test_prometheus_scrapes_the_exporter(dax_dir):
    _tool("promtool")
    loopback_up()
    work = tempfile.mkdtemp(prefix="pft-prom-")      # on the guest's tmpfs, not on DAX
    port = _free_port()
    exporter, attach_s = _exporter(["--listen", "127.0.0.1:%d" % port],
                                   os.path.join(work, "exporter.log"))
    prom = None
    try:
        t0 = time.monotonic()
        prom = Prometheus(work, port)
        wait_for("Prometheus to be ready", prom.ready, READY_TIMEOUT, every=1)
        ready_s = time.monotonic() - t0
        wait_for("a first scrape of the exporter",
              lambda: prom.query('up{job="pfntrace"} == 1'), SCRAPE_TIMEOUT, every=0.5)

        fs_dax, ended = _workload(os.path.join(dax_dir, "rtw"))
        scrapes = set()

        def two_scrapes_after():
            # The raw samples of up (a range selector keeps their scrape
            # timestamps; timestamp() of an expression would give the
            # evaluation time): successful scrapes that began after the end.
            scrapes.update(ts for ts, v in prom.samples('up{job="pfntrace"}[1m]')
                           if ts > ended and v == 1)
            return len(scrapes) >= 2

        wait_for("two scrapes after the workload", two_scrapes_after, SCRAPE_TIMEOUT, every=0.3)
        sel = 'mount="%s"' % MOUNT
        # What Prometheus holds and what the exporter serves, for a failure's message.
        status, text = _get("http://127.0.0.1:%d/metrics" % port)
        held = prom.query('{__name__=~"pfntrace_write_faults_total|up"}')
        assert prom.query('pfntrace_write_faults_total{%s,kind="pfn_mkwrite"}' % sel), \
            (held, sorted(scrapes), ended, text[:3000])
        pfn = prom.value('pfntrace_write_faults_total{%s,kind="pfn_mkwrite"}' % sel)
        by_kind = {m["kind"]: v for m, v in prom.query("pfntrace_write_faults_total{%s}" % sel)}
        fs = {m["fs"] for m, _ in prom.query("pfntrace_write_faults_total{%s}" % sel)}
        count = prom.value("pfntrace_handler_latency_seconds_count{%s}" % sel)
        inf = prom.value('pfntrace_handler_latency_seconds_bucket{%s,le="+Inf"}' % sel)
        lat_sum = prom.value("pfntrace_handler_latency_seconds_sum{%s}" % sel)
        p99 = prom.value("histogram_quantile(0.99, pfntrace_handler_latency_seconds_bucket{%s})"
                         % sel)
        verdicts = {m["verdict"]: v for m, v in prom.query("pfntrace_verdicts_total{%s}" % sel)}
        lost = prom.value("sum(pfntrace_lost_events_total)")
        lost_reasons = {m["reason"] for m, _ in prom.query("pfntrace_lost_events_total")}
        build = prom.query("pfntrace_build_info")
        scrape_s = prom.value('scrape_duration_seconds{job="pfntrace"}')
        groups = prom.rules()
        # The exposition itself, as Prometheus scrapes it.
        lint = run([_tool("promtool"), "check", "metrics"], input=text)
        rules = run([_tool("promtool"), "check", "rules", RULES])
    finally:
        if prom is not None:
            prom.close()
        exporter_rc = _stop(exporter)
    figures("exporter_prometheus", fs=FS, pfn_mkwrite=pfn, fs_dax_mkwrite=fs_dax,
            latency_count=count, latency_sum_s=lat_sum, p99_s=p99, verdicts=verdicts,
            lost=lost, scrapes_after=len(scrapes), scrape_s=scrape_s,
            exporter_attach_s=round(attach_s, 1), prometheus_ready_s=round(ready_s, 1))
    print("prometheus: pfn_mkwrite %g, fs_dax %d, latency _count %g, _sum %gs, p99 %gs, "
          "verdicts %s, lost %g, exporter attach %.1fs, prometheus ready %.1fs, scrape %.3fs"
          % (pfn, fs_dax, count, lat_sum, p99, verdicts, lost, attach_s, ready_s, scrape_s))
    assert fs_dax == N
    assert pfn == N
    assert by_kind == {"pfn_mkwrite": N, "page_mkwrite": 0, "pmd": 0, "fault": 0,
                       "no_notifier": 0}, by_kind
    assert fs == {FS}
    assert count == N and inf == N
    assert 0 < lat_sum and math.isfinite(p99) and p99 > 0
    assert verdicts["UPDATED"] + verdicts["CURRENT"] == N, verdicts
    assert verdicts["MISSED"] == verdicts["NO_NOTIFIER"] == verdicts["UNDECIDED"] == 0
    assert lost == 0
    # Every reason is a series from the first scrape on, zeros included.
    from pfntrace.tracer import LOST_REASONS
    assert lost_reasons == set(LOST_REASONS), lost_reasons
    (info,) = build
    assert info[0]["kernel"] == os.uname().release and info[0]["version"] and info[1] == 1
    assert status == 200 and "pfntrace_write_faults_total" in text
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert rules.returncode == 0 and "SUCCESS: 3 rules found" in rules.stdout, \
        rules.stdout + rules.stderr
    # The sample rules load and evaluate against the live series; none fires.
    (group,) = groups
    assert [r["health"] for r in group["rules"]] == ["ok"] * 3, group
    assert all(r["state"] == "inactive" for r in group["rules"]), group
    assert exporter_rc == 0


def _complete(text):
    """The families of one read of the textfile, or a failure: a complete
    exposition ends with a newline and holds every family."""
    from prometheus_client.parser import text_string_to_metric_families

    assert text.endswith("\n"), text[-200:]
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert FAMILIES <= set(fams), sorted(fams)
    return fams


def _sample(fams, family, name, **labels):
    (v,) = [s.value for s in fams[family].samples if s.name == name
            and all(s.labels.get(k) == x for k, x in labels.items())]
    return v


def test_textfile_is_always_complete(dax_dir):
    promtool = _tool("promtool")
    out = tempfile.mkdtemp(prefix="pft-textfile-")
    prom_file = os.path.join(out, "pfntrace.prom")
    exporter, attach_s = _exporter(["--textfile", out, "--interval", "0.2"],
                                   os.path.join(tempfile.mkdtemp(), "exporter.log"))
    reads = []
    try:
        wait_for("the first textfile", lambda: os.path.exists(prom_file), SCRAPE_TIMEOUT)
        work = subprocess.Popen(WORKLOAD + ["read-then-write", os.path.join(dax_dir, "rtw"),
                                            str(N)])
        # Read as fast as we can while the workload runs, and for a few
        # intervals after: every read must be one whole exposition.
        def version():
            st = os.stat(prom_file)     # each rename brings a new inode
            return st.st_ino, st.st_mtime_ns

        mtimes = {version()}
        after = None
        while after is None or time.monotonic() < after:
            with open(prom_file) as f:
                reads.append(_complete(f.read()))
            mtimes.add(version())
            if after is None and work.poll() is not None:
                after = time.monotonic() + 2.0
        assert work.returncode == 0
        with open(prom_file) as f:
            final = f.read()
        lint = run([promtool, "check", "metrics"], input=final)
    finally:
        rc = _stop(exporter)
    fams = _complete(final)
    pfn = _sample(fams, "pfntrace_write_faults", "pfntrace_write_faults_total",
                  mount=MOUNT, kind="pfn_mkwrite")
    count = _sample(fams, "pfntrace_handler_latency_seconds",
                    "pfntrace_handler_latency_seconds_count", mount=MOUNT)
    figures("exporter_textfile", fs=FS, reads=len(reads), rewrites=len(mtimes),
            pfn_mkwrite=pfn, latency_count=count, exporter_attach_s=round(attach_s, 1))
    print("textfile: %d complete reads over %d versions, pfn_mkwrite %g, latency _count %g"
          % (len(reads), len(mtimes), pfn, count))
    assert pfn == N and count == N
    assert len(mtimes) >= 5, "the file was rewritten only %d times" % len(mtimes)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert rc == 0
    # No temporary file left behind.
    assert os.listdir(out) == ["pfntrace.prom"]
