"""The running kernel's build configuration.

Some facts (CONFIG_KPROBES above all) cannot be probed safely any other way;
the config is where the kernel says what it was built with.
"""

import gzip
import os
import re

_SET = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")


class KconfigError(Exception):
    pass


class Kconfig:
    def __init__(self, text, source="<text>"):
        self.source = source
        self._values = {}
        for line in text.splitlines():
            line = line.strip()
            match = _SET.match(line)
            if match:
                self._values[match.group(1)] = match.group(2).strip('"')
            elif line and not line.startswith("#"):
                raise KconfigError("%s: not a kernel config line: %r" % (source, line))

    def get(self, name):
        """'y', 'm', the option's value, or None when not set."""
        return self._values.get(name)

    def enabled(self, name):
        return self.get(name) in ("y", "m")


def candidate_paths(release=None):
    release = release or os.uname().release
    # Newer Debian kernels (trixie's and later) also keep their config next
    # to their modules.
    return ["/proc/config.gz", "/boot/config-%s" % release,
            "/lib/modules/%s/config" % release]


def load(paths=None):
    """The first readable config of `paths` (default: /proc/config.gz, then
    /boot/config-<release>, /lib/modules/<release>/config); KconfigError when
    there is none."""
    paths = tuple(paths or candidate_paths())
    if paths in _LOADED:
        return _LOADED[paths]
    _LOADED[paths] = config = _read_first(paths)
    return config


_LOADED = {}   # paths -> Kconfig: the build config cannot change while the kernel runs


def _read_first(paths):
    for path in paths:
        opener = gzip.open if path.endswith(".gz") else open
        try:
            with opener(path, "rt") as f:
                return Kconfig(f.read(), source=path)
        except FileNotFoundError:
            continue
        except (OSError, EOFError) as e:
            raise KconfigError("cannot read %s: %s" % (path, e)) from None
    raise KconfigError("no kernel config found (tried %s)" % ", ".join(paths))
