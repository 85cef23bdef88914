"""The report's text at 60, 80 and 120 columns and piped, from a recording
whose files have long paths: nothing cut, no line longer than the width, a
path wrapped after a slash with an indent and its file name whole, no
verdict apart from its count."""

import io
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from pfntrace import correlate
from pfntrace.cli import main
from pfntrace.recording import Recording, RecordingWriter
from test_doctor_view import flat
from test_report import HEADER, NS, T0, fault, observed_stream

NAME = "mmap_mtime_testfile"
KEPT = "/mnt/dax/xfstests/scratch/generic-080/a-directory-the-harness-made/" + NAME
GONE = "/mnt/dax/harness-run-2024-05-01/scratch-file-removed-when-the-test-ended"
MISSED_MORE = 12
META = {"files": {"259:3:12": {"path": KEPT}, "259:3:13": {"path": GONE}},
        "procs": {"100": {"comm": "writer", "cmdline": "./writer " + KEPT}},
        "clock_samples": [[0, T0]], "symbols": {"0xffffffffc0a01230": "ext4_dax_fault"}}
# A verdict at a line's end and its count starting the next (a fault's
# verdict may be followed by its latency there: "UPDATED" / "3.0 us").
VERDICT_APART = re.compile(r"\b(UPDATED|CURRENT|MISSED|NO_NOTIFIER|UNDECIDED)\n *\d+"
                           r"(?![\d.]| [mun]?s\b)")


@pytest.fixture
def rec_path(tmp_path):
    """test_report's faults and stats on these two files, and MISSED_MORE
    faults more, each at a later tick than the file's mtime: two digits."""
    t1 = T0 + NS
    events = observed_stream() + [fault((10 + i) * NS, t1, t1, pgoff=10 + i)
                                  for i in range(MISSED_MORE)]
    header = dict(HEADER, command=["./writer", KEPT])
    path = tmp_path / "long.pft"
    w = RecordingWriter.create(path, header)
    w.add_meta(META)
    w.add_events(b"".join(events))
    w.close({"duration_ns": 30 * NS, "exit_code": 0,
             "statx": {"259:3:12": {"path": KEPT, "exists": True,
                                    "mtime_ns": t1, "ctime_ns": t1},
                       "259:3:13": {"path": GONE, "exists": False}}})
    return path


def rendered(rec_path, width):
    from pfntrace.views import report

    with Recording.open(rec_path) as rec:
        an = correlate.analyse(rec, keep_faults=True)
    console = Console(width=width, file=io.StringIO(), color_system=None,
                      force_terminal=False)
    report.render(console, an, events=True, source=str(rec_path))
    return console.file.getvalue()


def assert_never_cut(text, width):
    lines = text.splitlines()
    assert "…" not in text and "..." not in text
    assert max(len(line) for line in lines) <= width, \
        [line for line in lines if len(line) > width]
    assert not VERDICT_APART.search(text)
    assert "MISSED %d" % (MISSED_MORE + 1) in text      # summary, files, processes
    # A path goes on after a slash, on an indented line, its name whole.
    assert KEPT in flat(text) and GONE + " (deleted)" in flat(text)
    for line, after in zip(lines, lines[1:]):
        if line.endswith("/"):
            assert after.startswith(" "), (line, after)
    assert any(NAME in line for line in lines)
    # A date never leaves its time.
    assert not re.search(r"\d{4}-\d\d-\d\d\n", text)


@pytest.mark.parametrize("width", (60, 80, 120))
def test_report_is_never_cut(rec_path, width):
    text = rendered(rec_path, width)
    assert_never_cut(text, width)
    if width < len(KEPT):       # the path had to be wrapped, and was
        assert any(line.endswith("/") for line in text.splitlines())


def test_wide_report_keeps_its_tables(rec_path):
    # Where a table fits whole, it is one: the files table at its natural
    # width (rich's), the write faults with their detail wrapped beside.
    text = rendered(rec_path, 260)
    assert_never_cut(text, 260)
    assert re.search(r"file +writes +pfn_mkw", text)
    assert re.search(r"time +pid +tid +comm +file", text)


def test_piped_report_is_never_cut(rec_path):
    r = CliRunner().invoke(main, ["report", "--events", str(rec_path)])
    assert r.exit_code == 0
    assert_never_cut(r.output, 200)
    assert KEPT in r.output
