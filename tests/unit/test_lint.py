"""The tree is ruff clean, with the configuration in ruff.toml and the ruff
pinned in constraints.txt (scripts/setup.sh installs it with the tests)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ("pfntrace", "tests", "bench", "scripts", "contrib")


def ruff(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=cwd, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)


def test_the_tree_is_ruff_clean():
    p = ruff("check", "--no-cache", *CHECKED)
    assert p.returncode == 0, p.stdout


def test_the_configuration_finds_what_it_should(tmp_path):
    """The same configuration on a file with an unused import, an unused
    variable and a 101-character line: three findings, so a clean tree is
    not a configuration that checks nothing."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f():\n    x = 1\n    return '%s'\n" % ("y" * 88))
    p = ruff("check", "--no-cache", "--config", str(ROOT / "ruff.toml"), "--output-format",
             "concise", str(bad), cwd=tmp_path)
    assert p.returncode == 1, p.stdout
    assert {line.split()[1] for line in p.stdout.splitlines() if line.startswith("bad.py:")} \
        == {"F401", "F841", "E501"}, p.stdout
