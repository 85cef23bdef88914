"""/proc/kallsyms parsing, over an excerpt captured on the 6.18 host."""

import os
import re

import pytest

from pfntrace.kernel.kallsyms import Kallsyms, KallsymsError

DATA = os.path.join(os.path.dirname(__file__), "data")
CAPTURED = os.path.join(DATA, "kallsyms-6.18.txt")


@pytest.fixture
def kallsyms():
    return Kallsyms.load(CAPTURED)


def test_names_addresses_and_modules(kallsyms):
    assert "do_wp_page" in kallsyms
    assert "wp_pfn_shared" not in kallsyms  # inlined into do_wp_page
    assert kallsyms.address("do_wp_page") == 0xFFFFFFFF815E2F50
    assert kallsyms.address("wp_pfn_shared") is None
    assert kallsyms.module("ftrace_trampoline") == "__builtin__ftrace"
    assert kallsyms.module("do_wp_page") is None
    assert not kallsyms.addresses_hidden


def test_resolve(kallsyms):
    assert kallsyms.resolve(0xFFFFFFFF815E2F50) == "do_wp_page"
    assert kallsyms.resolve(0xFFFFFFFF815E2F50 + 0x42) == "do_wp_page+0x42"
    assert kallsyms.resolve(0xFFFFFFFF817A8E30) == "ext4_dax_fault"
    assert kallsyms.resolve(0x1000) == "0x1000"


def test_resolve_orders_addresses_as_numbers(kallsyms):
    # The index sorts the table's hex strings: it must agree with sorting
    # the numbers on the captured table, and on tables whose addresses are
    # not all printed alike (upper case, another width).
    width, addrs, names = kallsyms.index_text()
    numbers = [int(a, 16) for a in addrs]
    assert numbers == sorted(numbers) and len(numbers) > 20
    for text in ("FFFFFFFF81000200 t upper\nffffffff81000100 t lower\n",
                 "ffffffff81000200 t upper\n81000100 t short\n"):
        table = Kallsyms(text)
        assert table.resolve(0xFFFFFFFF81000208) == "upper+0x8"
        low = table.index_text()[2][0]
        assert table.resolve(0xFFFFFFFF81000100 if low == "lower" else 0x81000104) == \
            ("lower" if low == "lower" else "short+0x4")
    assert Kallsyms("81000100 t a\n").resolve(0xFFFFFFFF81000000) == "a+0xfffffffeffffff00"


def test_first_of_repeated_static_names_wins():
    text = ("ffffffff81000100 t helper\nffffffff81000200 t helper\n"
            "ffffffffc0001000 t ext4_dax_fault\t[ext4]\n")
    kallsyms = Kallsyms(text)
    assert kallsyms.address("helper") == 0xFFFFFFFF81000100
    assert kallsyms.module("ext4_dax_fault") == "ext4"


def test_zero_addresses_are_detected():
    # What a non-root reader sees with kptr_restrict.
    with open(CAPTURED) as f:
        hidden = re.sub(r"^[0-9a-f]+", "0" * 16, f.read(), flags=re.M)
    kallsyms = Kallsyms(hidden, source="hidden")
    assert kallsyms.addresses_hidden
    assert "do_wp_page" in kallsyms
    with pytest.raises(KallsymsError, match="zero addresses"):
        kallsyms.resolve(0xFFFFFFFF815E2F50)


def test_bad_input_is_one_line_error(tmp_path):
    with pytest.raises(KallsymsError, match="line 2 is not a kallsyms line"):
        Kallsyms("ffffffff81000000 T _text\nnot kallsyms at all\n")
    with pytest.raises(KallsymsError, match="cannot read"):
        Kallsyms.load(str(tmp_path / "missing"))


@pytest.mark.skipif(not os.path.exists("/proc/kallsyms"), reason="no /proc/kallsyms")
def test_host_kallsyms_loads():
    kallsyms = Kallsyms.load()
    assert len(kallsyms) > 1000
    assert "do_wp_page" in kallsyms


def test_the_running_kernels_table_is_read_again_only_when_modules_change(tmp_path, monkeypatch):
    """Kallsyms.load() of the running kernel returns the table it read while
    /proc/modules reads the same, and reads it again once a module came or
    went (its handlers' addresses are new); an explicit path is always read."""
    from pfntrace.kernel import kallsyms as ks

    table, modules = tmp_path / "kallsyms", tmp_path / "modules"
    table.write_text("ffffffff81000100 T do_wp_page\n")
    modules.write_text("ext4 1000 1 - Live 0xffffffffc0000000\n")
    monkeypatch.setattr(ks, "PROC_KALLSYMS", str(table))
    monkeypatch.setattr(ks, "PROC_MODULES", str(modules))
    monkeypatch.setattr(ks, "_LOADED", {})
    first = Kallsyms.load()
    table.write_text("ffffffff81000100 T do_wp_page\n"
                     "ffffffffc0b00010 t noop_pfn_mkwrite\t[pftbug]\n")
    assert Kallsyms.load() is first and "noop_pfn_mkwrite" not in first
    # A reference count moves with every mount and probe: no module moved.
    modules.write_text("ext4 1000 2 - Live 0xffffffffc0000000\n")
    assert Kallsyms.load() is first
    modules.write_text("ext4 1000 1 - Live 0xffffffffc0000000\n"
                       "pftbug 2000 0 - Live 0xffffffffc0b00000 (OE)\n")
    again = Kallsyms.load()
    assert again is not first and again.resolve(0xFFFFFFFFC0B00010) == "noop_pfn_mkwrite"
    assert Kallsyms.load() is again
    assert Kallsyms.load(str(table)) is not again
    # Without a readable /proc/modules nothing is kept.
    modules.unlink()
    assert Kallsyms.load() is not Kallsyms.load()
