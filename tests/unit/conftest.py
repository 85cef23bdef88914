"""Unit tests do not depend on the terminal they run in, nor on whichever rich
a machine happens to have.

- Every test sees a fixed terminal environment: no COLUMNS/LINES, a TERM rich
  takes at its word (TERM=dumb makes rich ignore an explicit width and use
  80 columns), no NO_COLOR/FORCE_COLOR.  Tests that render give their Console
  an explicit width.
- Golden text rendered by rich is rich's own layout: it is made with one rich
  (RICH_GOLDEN, the version constraints.txt pins and scripts/setup.sh
  installs).  Under another rich a golden test is skipped with both versions
  named, not failed: regenerate it (PFNTRACE_UPDATE_GOLDEN=1) and move the pin
  together.
"""

import os
from importlib.metadata import version

import pytest

RICH_GOLDEN = "14.2.0"
_TERMINAL_ENV = ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE",
                 "TTY_INTERACTIVE", "JUPYTER_COLUMNS", "JUPYTER_LINES", "COLORTERM")


@pytest.fixture(autouse=True)
def _fixed_terminal(monkeypatch):
    for name in _TERMINAL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "rich_golden: golden text rendered by rich %s (skipped under another rich)"
        % RICH_GOLDEN)


def pytest_runtest_setup(item):
    if not item.get_closest_marker("rich_golden") or os.environ.get("PFNTRACE_UPDATE_GOLDEN"):
        return
    have = version("rich")
    if have != RICH_GOLDEN:
        pytest.skip("golden text made with rich %s, rich %s is installed (scripts/setup.sh "
                    "installs the pinned one; regenerate with PFNTRACE_UPDATE_GOLDEN=1 and "
                    "move the pin in constraints.txt and tests/unit/conftest.py together)"
                    % (RICH_GOLDEN, have))
