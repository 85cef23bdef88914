"""views/wrap.py: text laid out to a width, never cut."""

from pfntrace.views.wrap import Units, clauses, lay_out, words

HEADERS_FIX = ("bcc needs the kernel headers (/lib/modules/6.18.44-fc-v1272/build/include is "
               "missing): install linux-headers-6.18.44-fc-v1272, or run inside `pfntrace lab`")


def plain(lines):
    return [line.plain for line in lines]


def test_clauses_make_each_command_a_unit():
    assert [str(u) for u in clauses(HEADERS_FIX)] == [
        "bcc needs the kernel headers",
        "(/lib/modules/6.18.44-fc-v1272/build/include is missing):",
        "install linux-headers-6.18.44-fc-v1272,",
        "or run inside `pfntrace lab`"]
    assert [str(u) for u in clauses("tracefs is not mounted: mount -t tracefs nodev "
                                     "/sys/kernel/tracing")] == [
        "tracefs is not mounted:", "mount -t tracefs nodev /sys/kernel/tracing"]


def test_words_keep_numbers_with_units_dates_with_times_and_quoted_commands():
    got = [str(u) for u in words("mtime stayed at 2023-11-14 22:13:21.000000000, 2.000 s "
                                  "before; read 3.5 us ago; 2 stats; run inside "
                                  "`pfntrace lab`, or")]
    assert got == ["mtime", "stayed", "at", "2023-11-14 22:13:21.000000000,", "2.000 s",
                   "before;", "read", "3.5 us", "ago;", "2", "stats;", "run", "inside",
                   "`pfntrace lab`,", "or"]


def test_a_unit_that_fits_a_line_is_never_split():
    lines = plain(lay_out(clauses(HEADERS_FIX), 60, first="    fix: ", indent=9))
    assert max(map(len, lines)) <= 60
    assert any("install linux-headers-6.18.44-fc-v1272," in line for line in lines)
    assert " ".join(line.strip() for line in lines) == "fix: " + HEADERS_FIX
    assert all(line.startswith(" " * 9) for line in lines[1:])


def test_units_keep_their_separator():
    verdicts = Units(["UPDATED 1", "CURRENT 1", "MISSED 1"], sep="  ")
    assert plain(lay_out(verdicts, 80)) == ["UPDATED 1  CURRENT 1  MISSED 1"]
    assert plain(lay_out(verdicts, 24, indent=2)) == ["UPDATED 1  CURRENT 1", "  MISSED 1"]


def test_a_long_path_wraps_after_a_slash_and_keeps_its_file_name():
    path = "/mnt/dax/xfstests/scratch/generic-080/a-rather-long-directory/mmap_mtime_testfile"
    lines = plain(lay_out([path, "(deleted)"], 40, indent=4))
    assert lines == ["/mnt/dax/xfstests/scratch/generic-080/",
                     "    a-rather-long-directory/",
                     "    mmap_mtime_testfile (deleted)"]
    assert "".join(line.strip() for line in lines[:-1]) + "mmap_mtime_testfile" == path


def test_a_word_longer_than_the_line_overflows_its_own_line_uncut():
    word = "linux-headers-" + "x" * 40
    assert plain(lay_out(["a", word, "b"], 30, indent=2)) == ["a", "  " + word, "  b"]


def test_only_a_file_name_longer_than_the_line_is_folded():
    name = "n" * 50
    lines = plain(lay_out(["file", "/mnt/dax/" + name], 30, indent=4))
    assert lines == ["file /mnt/dax/", "    " + "n" * 26, "    " + "n" * 24]


def test_a_start_that_nothing_follows_leaves_no_trailing_space():
    lines = plain(lay_out(["a-unit-of-twenty-chars"], 30, first="cannot run here: ", indent=4))
    assert lines == ["cannot run here:", "    a-unit-of-twenty-chars"]
