"""Files users hand us and files we write.

Reading: `text_lines` yields the numbered lines of a text library whatever its encoding and line ends, so
every reader (migrate, gather's sources) splits and decodes the same way. Writing: `atomic_write` goes
through a temporary file beside the target and a rename (atomic on POSIX), so a reader or a resumed run
sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import codecs
import csv
import os
from pathlib import Path
from typing import Iterator

# Undecodable bytes become lone surrogates U+DC00 + byte (surrogateescape's mapping, extended to bytes below
# 0x80, which UTF-16 can also fail on), so the line holding them is found and reported, and no other line is
# lost. `bad_bytes` finds them.
_MARK = "sd-bridge-mark"
codecs.register_error(_MARK, lambda err: ("".join(chr(0xDC00 + b) for b in err.object[err.start:err.end]), err.end))


# Python's csv refuses a field over 128 KiB: a valid row with a long field (a prompt beside a base64 thumbnail,
# a long caption) was rejected, and the reader, resynchronising mid-field, could swallow the next good row.
# Every CSV reader here reads its lines through this module. A long *prompt* is still a row error, by
# migrate's --max-chars; other columns pass through whole.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


def sniff_encoding(head: bytes) -> str:
    """The encoding of a text file from its first bytes. A BOM decides; without one, UTF-16 is told by its NUL
    bytes: ASCII-range text in UTF-16LE has a zero at nearly every odd offset (BE: every even one), which UTF-8
    text never has. Windows tools ("Unicode text" exports, PowerShell's `>`) write UTF-16, often without a BOM;
    read as UTF-8 it decoded to garbage with exit 0."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"  # Python's utf-16 reads the BOM, picks the byte order and drops it
    pairs = len(head) // 2
    if pairs >= 2:
        even_zeros = head[0:2 * pairs:2].count(0)
        odd_zeros = head[1:2 * pairs:2].count(0)
        if odd_zeros >= 0.4 * pairs and even_zeros <= 0.05 * pairs:
            return "utf-16-le"
        if even_zeros >= 0.4 * pairs and odd_zeros <= 0.05 * pairs:
            return "utf-16-be"
    return "utf-8-sig"  # also reads plain UTF-8; a UTF-8 BOM is dropped


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based number, line with its ending) of a text file. Lines end at LF, CRLF or a bare CR (old Mac
    files and some exporters: read by bytes, a bare-CR file was one line and its records merged into one
    error). Undecodable bytes become lone surrogates that `bad_bytes` reports."""
    with open(path, encoding=file_encoding(path), errors=_MARK, newline="") as fh:
        yield from enumerate(fh, 1)


def file_encoding(path: Path) -> str:
    with open(path, "rb") as raw:
        return sniff_encoding(raw.read(4096))


def bad_bytes(*values) -> str | None:
    """The reason a decoded value cannot be used, when `text_lines` marked undecodable bytes in it."""
    for v in values:
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as err:
                return f"undecodable bytes at character {err.start}"
    return None


def atomic_write(path: Path | str, data: bytes | str, encoding: str = "utf-8") -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove the temp files `atomic_write` left in `folder` when its process was killed mid-write (named
    `.NAME.PID.tmp`; a file whose process is still alive is another run's write in progress and is kept).
    Returns what was removed."""
    removed = []
    for tmp in folder.glob(".*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class OutputBusyError(RuntimeError):
    """Another live run is writing the same output."""


class OutputLock:
    """One run at a time on one output (a file or a directory): `OUT.lock` beside it holds an exclusive lock
    and the pid of the run that holds it. A second run on the same output is refused with that pid, before it
    writes anything; two runs into one output used to interleave their rows and both exit 0.

    The lock is the kernel's (fcntl.flock on the lock file), so a run that dies, even by SIGKILL, releases it
    and the next run takes it over: no stale lock to clear by hand. The file is removed when the run ends; a
    run that locked a file another run removed in between checks the inode and tries again.
    """

    def __init__(self, out: Path | str):
        out = Path(out)
        self.out, self.path, self._fd = out, out.with_name(out.name + ".lock"), None

    def __enter__(self) -> "OutputLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise OutputBusyError(f"{self.out} is being written by another run (pid {holder}); wait for it to "
                                      "finish or choose another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed this file after we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still locked: a waiting run then locks a new file
            os.close(self._fd)
            self._fd = None
