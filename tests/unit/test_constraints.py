"""constraints.txt pins every Python package pfntrace and its tests install
(scripts/setup.sh installs with it), so a fresh machine gets the versions the
tests were made with."""

import os
import re
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Debian's, through --system-site-packages; never from the package index.
NOT_FROM_PIP = {"bcc"}


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def pins():
    out = {}
    with open(os.path.join(REPO, "constraints.txt")) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                name, _, ver = line.partition("==")
                assert ver, "not an exact pin: %r" % line
                out[_norm(name)] = ver
    return out


def _requirements(dist, extras=()):
    """Names dist requires here (markers evaluated: this python, linux, extras)."""
    for text in dist.requires or ():
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e})
                                     for e in tuple(extras) + ("",)):
            yield _norm(req.name)


def installed_tree():
    """pfntrace[test] and everything it pulls in, by installed metadata."""
    seen, todo = set(), [("pfntrace", ("test",))]
    while todo:
        name, extras = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        todo.extend((r, ()) for r in _requirements(dist, extras))
    return seen - {"pfntrace"}


def test_every_dependency_is_pinned():
    missing = installed_tree() - set(pins()) - NOT_FROM_PIP
    assert not missing, "add exact pins to constraints.txt for: %s" % ", ".join(sorted(missing))


def test_setup_uses_the_constraints():
    setup = open(os.path.join(REPO, "scripts", "setup.sh")).read()
    assert "-c constraints.txt" in setup
