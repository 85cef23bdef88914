"""The newest Debian kernel, fetched into the lab's cache (never installed).

Debian 12 installs 6.1 and 6.12; the kernels users run today are newer.  This
module asks Debian's archive, through apt with a private configuration (its
own sources list, lists and cache under CACHE/debian/apt: the system's apt
sources and dpkg database are neither read for packages nor changed), which
linux-image-amd64 is the newest across SUITES, downloads that kernel's
packages (image, binary, modules, base, headers, headers-common, kbuild,
and the newer libc6 the kbuild tools need),
unpacks them with dpkg-deb into CACHE/debian/<release>/root and runs depmod
there.  The packages cannot be installed on Debian 12 (they want a newer
gcc and linux-base); the lab boots the unpacked kernel directly.

    python -m pfntrace.lab.newest fetch    # idempotent; setup.sh runs it
    python -m pfntrace.lab.newest show     # what the cache holds

The archive's mirror is the one this system's apt uses (its own sources),
or PFNTRACE_DEBIAN_MIRROR.  What was fetched is recorded in
CACHE/debian/<release>/fetched.json; CACHE/debian/newest.json names the
release the `newest` lab alias boots.
"""

import datetime
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

from pfntrace.lab import cache as lab_cache
from pfntrace.lab.cache import LabError

# Where a kernel newer than Debian 12's can come from; the newest version of
# META across them wins (compared as Debian versions, not by apt's pins).
SUITES = ("unstable", "trixie-backports")
META = "linux-image-amd64"
LIBC = "libc6"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
POINTER = "newest.json"
RECORD = "fetched.json"


def base_dir():
    return os.path.join(lab_cache.CACHE, "debian")


def kernel_dir(release):
    return os.path.join(base_dir(), release)


# --- the archive's mirror, from this system's apt sources ---------------------

def _source_uris(text, deb822):
    """(uri, suites) pairs of 'deb' sources in one sources file."""
    found = []
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
            if "deb" not in fields.get("types", []) or fields.get("enabled") == ["no"]:
                continue
            for uri in fields.get("uris", []):
                found.append((uri, fields.get("suites", [])))
    else:
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            if words and words[0].startswith("["):
                while words and not words[0].endswith("]"):
                    words.pop(0)
                words = words[1:]
            if len(words) >= 2:
                found.append((words[0], [words[1]]))
    return found


def system_mirror(etc="/etc/apt"):
    """The Debian mirror this system's apt fetches its main archive from (not
    the security archive), or None."""
    candidates = []
    paths = [(os.path.join(etc, "sources.list"), False)]
    listed = os.path.join(etc, "sources.list.d")
    paths += [(p, False) for p in sorted(glob.glob(os.path.join(listed, "*.list")))]
    paths += [(p, True) for p in sorted(glob.glob(os.path.join(listed, "*.sources")))]
    for path, deb822 in paths:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        candidates += _source_uris(text, deb822)
    for uri, suites in candidates:
        if not uri.startswith(("http://", "https://")):
            continue
        if uri.rstrip("/").endswith("-security") or any("security" in s for s in suites):
            continue
        if any(s.split("-")[0] in ("bookworm", "trixie", "forky", "sid", "stable", "testing",
                                   "unstable", "oldstable") for s in suites):
            return uri.rstrip("/")
    return None


def mirror():
    chosen = os.environ.get("PFNTRACE_DEBIAN_MIRROR") or system_mirror()
    if not chosen:
        raise LabError("no Debian mirror in this system's apt sources (/etc/apt/sources.list"
                       "[.d]); set PFNTRACE_DEBIAN_MIRROR")
    return chosen


# --- apt with a private configuration -----------------------------------------

class Apt:
    """apt-get / apt-cache over SUITES only, state kept in CACHE/debian/apt."""

    def __init__(self, root=None, suites=SUITES, archive=None):
        self.root = root or os.path.join(base_dir(), "apt")
        self.suites = suites
        self.archive = archive
        self.sources = os.path.join(self.root, "sources.list")

    def options(self):
        r = self.root
        opts = {
            "Dir::Etc::SourceList": self.sources, "Dir::Etc::SourceParts": "/dev/null",
            "Dir::Etc::Preferences": "/dev/null", "Dir::Etc::PreferencesParts": "/dev/null",
            "Dir::State::Lists": os.path.join(r, "lists"),
            "Dir::Cache": os.path.join(r, "cache"), "Dir::State::status": "/dev/null",
            "APT::Architectures": "amd64", "Acquire::Languages": "none",
        }
        out = []
        for k, v in opts.items():
            out += ["-o", "%s=%s" % (k, v)]
        return out

    def _run(self, tool, args, cwd=None):
        proc = subprocess.run([tool, "-q"] + self.options() + args, cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              errors="replace", check=False,
                              env=dict(os.environ, LC_ALL="C"))
        return proc

    def update(self):
        for d in ("lists/partial", "cache/archives/partial"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        archive = self.archive or mirror()
        with open(self.sources, "w") as f:
            for suite in self.suites:
                f.write("deb [signed-by=%s] %s %s main\n" % (KEYRING, archive, suite))
        proc = self._run("apt-get", ["update"])
        errors = [l for l in proc.stderr.splitlines() if l.startswith(("E:", "W:"))]
        if proc.returncode != 0 or any(l.startswith("E:") for l in errors):
            raise LabError("apt-get update of %s failed: %s" % (
                ", ".join(self.suites), (errors or proc.stderr.strip().splitlines()
                                         or ["exit %d" % proc.returncode])[-1]))
        return archive

    def show(self, package):
        """Every version of package the lists know, as {field: value} dicts."""
        proc = self._run("apt-cache", ["show", package])
        if proc.returncode != 0:
            return []
        stanzas = []
        for block in re.split(r"\n\s*\n", proc.stdout.strip()):
            fields, key = {}, None
            for line in block.splitlines():
                if line[:1].isspace() and key:
                    fields[key] += "\n" + line.strip()
                elif ":" in line:
                    key, value = line.split(":", 1)
                    fields[key] = value.strip()
            if fields.get("Package"):
                stanzas.append(fields)
        return stanzas

    def suite_of(self, package, version):
        proc = self._run("apt-cache", ["madison", package])
        for line in proc.stdout.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= 3 and parts[1] == version:
                for suite in self.suites:
                    if " %s/" % suite in parts[2] or parts[2].endswith(" " + suite):
                        return suite
        return ""

    def download(self, specs, dest):
        os.makedirs(dest, exist_ok=True)
        proc = self._run("apt-get", ["download"] + specs, cwd=dest)
        if proc.returncode != 0:
            errors = [l for l in proc.stderr.splitlines() if l.startswith("E:")]
            raise LabError("apt-get download failed: %s" % (
                (errors or proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]))


def version_gt(a, b):
    """Debian version a > b (dpkg's own comparison)."""
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b],
                          check=False).returncode == 0


def newest_stanza(stanzas):
    best = None
    for s in stanzas:
        if best is None or version_gt(s["Version"], best["Version"]):
            best = s
    return best


def depends(stanza):
    """Package names in Depends (every alternative), with their '(= v)' if any."""
    out = []
    for clause in stanza.get("Depends", "").split(","):
        for alt in clause.split("|"):
            m = re.match(r"\s*([a-z0-9][a-z0-9+.-]*)(?::\w+)?\s*(?:\(\s*([<>=]+)\s*([^)]+)\))?",
                         alt)
            if m:
                out.append((m.group(1), m.group(3) if m.group(2) == "=" else None))
    return out


def discover(apt):
    """(release, version, image package) of the newest META across the suites."""
    meta = newest_stanza(apt.show(META))
    if meta is None:
        raise LabError("%s is in none of %s" % (META, ", ".join(apt.suites)))
    for name, _ in depends(meta):
        m = re.match(r"^linux-image-(\d.*-amd64)$", name)
        if m:
            return m.group(1), meta["Version"], name
    raise LabError("%s %s depends on no linux-image-<release>-amd64 (Depends: %s)"
                   % (META, meta["Version"], meta.get("Depends", "")))


def package_set(apt, release, version):
    """[(package, version)]: the image and headers of release and what they
    depend on from the same kernel build (names carrying its version stem)."""
    stem = release[:-len("-amd64")] if release.endswith("-amd64") else release
    todo = [("linux-image-" + release, version), ("linux-headers-" + release, version)]
    done = {}
    while todo:
        name, want = todo.pop(0)
        if name in done:
            continue
        stanzas = apt.show(name)
        exact = [s for s in stanzas if s["Version"] == (want or version)]
        stanza = exact[0] if exact else (newest_stanza(stanzas) if not want else None)
        if stanza is None:
            raise LabError("%s %s is not in the archive's lists" % (name, want or version))
        done[name] = stanza["Version"]
        for dep, dep_version in depends(stanza):
            if dep.startswith("linux-") and stem in dep and dep not in done:
                todo.append((dep, dep_version))
    return sorted(done.items())


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _deb_path(debs, name, version):
    # apt-get download names files NAME_VERSION_ARCH.deb, an epoch's ':' as %3a.
    prefix = "%s_%s_" % (name, version.replace(":", "%3a"))
    hits = glob.glob(os.path.join(glob.escape(debs), glob.escape(prefix) + "*.deb"))
    return hits[0] if hits else None


def unpack(debs, root, release):
    """dpkg-deb -x every .deb into root (replaced), /lib -> usr/lib as on a
    merged-/usr system, then depmod for release."""
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "usr", "lib"))
    os.symlink("usr/lib", os.path.join(tmp, "lib"))
    for deb in debs:
        proc = subprocess.run(["dpkg-deb", "-x", deb, tmp], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace",
                              check=False)
        if proc.returncode != 0:
            raise LabError("dpkg-deb -x %s failed: %s" % (os.path.basename(deb),
                                                         proc.stdout.strip()[-300:]))
    wrap_kbuild_tools(tmp, root)
    proc = subprocess.run(["depmod", "-b", tmp, release], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace", check=False)
    if proc.returncode != 0:
        raise LabError("depmod -b %s %s failed: %s" % (tmp, release, proc.stdout.strip()[-300:]))
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)


def _glibc_needed(data):
    """The highest GLIBC_2.N symbol version an ELF file names, as N."""
    found = [int(m) for m in re.findall(rb"GLIBC_2\.(\d+)", data)]
    return max(found) if found else 0


def host_glibc():
    text = os.confstr("CS_GNU_LIBC_VERSION") or "glibc 2.0"     # "glibc 2.36"
    return int(text.split()[-1].split(".")[1])


def wrap_kbuild_tools(root, final=None):
    """The kbuild tools (modpost, objtool, resolve_btfids) are linked against
    the newer distribution's C library: run each one that needs more than
    this system's glibc through the dynamic loader of the libc6 unpacked
    next to them (LIBC: its folder), with this system's other libraries
    (libelf, zlib) behind it.  The original ELF stays as NAME.elf.  final:
    where root will be when the wrappers run (it is unpacked elsewhere)."""
    final = final or root

    def there(path):
        return final + path[len(root):]

    loaders = glob.glob(os.path.join(root, "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"))
    have = host_glibc()
    for kbuild in glob.glob(os.path.join(root, "usr/lib/linux-kbuild-*")):
        for folder, _, names in os.walk(kbuild):
            for name in names:
                path = os.path.join(folder, name)
                if os.path.islink(path) or not os.access(path, os.X_OK):
                    continue
                with open(path, "rb") as f:
                    data = f.read()
                if data[:4] != b"\x7fELF" or _glibc_needed(data) <= have:
                    continue
                if not loaders:
                    raise LabError("%s needs glibc 2.%d (this system has 2.%d) and no newer "
                                   "libc6 was unpacked" % (path, _glibc_needed(data), have))
                libdir = os.path.dirname(loaders[0])
                os.rename(path, path + ".elf")
                with open(path, "w") as f:
                    f.write("#!/bin/sh\n# linked against glibc 2.%d: run with the unpacked libc6\n"
                            "exec %s --library-path %s:/lib/x86_64-linux-gnu"
                            ":/usr/lib/x86_64-linux-gnu %s \"$@\"\n" % (
                                _glibc_needed(data), there(loaders[0]), there(libdir),
                                there(path + ".elf")))
                os.chmod(path, 0o755)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def complete(record):
    """True when a fetched.json describes an unpacked, usable kernel."""
    if not record:
        return False
    root, release = record.get("root", ""), record.get("release", "")
    return (os.path.exists(os.path.join(root, "usr/lib/modules", release, "vmlinuz"))
            and os.path.exists(os.path.join(root, "usr/lib/modules", release, "modules.dep"))
            and os.path.isdir(os.path.join(root, "usr/src", "linux-headers-" + release)))


def current():
    """The fetched.json of the kernel the `newest` alias boots, or None."""
    pointer = read_json(os.path.join(base_dir(), POINTER))
    if not pointer:
        return None
    return read_json(os.path.join(kernel_dir(pointer.get("release", "")), RECORD))


def fetch(apt=None, log=None):
    """Make the newest kernel available in the cache; return its record.
    When the archive cannot be reached, an earlier fetch is kept (log says so)."""
    log = log or (lambda line: None)
    apt = apt or Apt()
    try:
        archive = apt.update()
    except LabError as e:
        old = current()
        if complete(old):
            log("archive not reachable (%s): keeping %s" % (e, old["release"]))
            return old
        raise
    release, version, image = discover(apt)
    kdir = kernel_dir(release)
    record = read_json(os.path.join(kdir, RECORD))
    if not (complete(record) and record.get("version") == version):
        pkgs = package_set(apt, release, version)
        # The C library the kernel's build tools were linked against.
        libc = newest_stanza(apt.show(LIBC))
        if libc is None:
            raise LabError("%s is in none of %s" % (LIBC, ", ".join(apt.suites)))
        pkgs.append((LIBC, libc["Version"]))
        debs = os.path.join(kdir, "debs")
        want = [(n, v) for n, v in pkgs if not _deb_path(debs, n, v)]
        if want:
            log("downloading %s" % ", ".join("%s=%s" % nv for nv in want))
            apt.download(["%s=%s" % nv for nv in want], debs)
        files = []
        for name, v in pkgs:
            path = _deb_path(debs, name, v)
            if path is None:
                raise LabError("apt-get download left no .deb for %s %s" % (name, v))
            files.append(path)
        log("unpacking %d packages into %s" % (len(files), os.path.join(kdir, "root")))
        unpack(files, os.path.join(kdir, "root"), release)
        record = {
            "release": release, "version": version, "meta": META,
            "suite": apt.suite_of(META, version), "suites": list(apt.suites),
            "archive": archive, "root": os.path.join(kdir, "root"),
            "fetched": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "packages": [{"package": n, "version": v, "file": os.path.basename(f),
                          "sha256": _sha256(f)} for (n, v), f in zip(pkgs, files)],
        }
        _write_json(os.path.join(kdir, RECORD), record)
        if not complete(record):
            raise LabError("the unpacked %s lacks its vmlinuz, modules.dep or headers (%s)"
                           % (release, record["root"]))
    _write_json(os.path.join(base_dir(), POINTER), {"release": release, "version": version})
    return record


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv not in (["fetch"], ["show"]):
        sys.stderr.write("usage: python -m pfntrace.lab.newest fetch|show\n")
        return 2
    try:
        if argv == ["fetch"]:
            record = fetch(log=lambda line: sys.stderr.write("newest: %s\n" % line))
        else:
            record = current()
            if not complete(record):
                raise LabError("no newest kernel in %s (python -m pfntrace.lab.newest fetch)"
                               % base_dir())
    except LabError as e:
        sys.stderr.write("pfntrace: newest kernel: %s\n" % e)
        return 1
    print("%s %s (%s) in %s" % (record["release"], record["version"], record.get("suite", ""),
                                record["root"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
