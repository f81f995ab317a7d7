"""The comparisons file a judging page appends to: one fsynced line per judgement under a file
lock, and the judged pairs kept in memory (read once, then followed as lines are appended, also
by another server on the same file)."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from filelock import FileLock

from ..data.comparisons import GREATER, LESS, TIE
from ..data.tables import first_non_utf8
from ..errors import DataError

COLUMNS = ["a", "b", "outcome", "annotator", "time"]
OUTCOMES = GREATER | LESS | TIE
SPREADSHEET_FORMULA = ("=", "+", "-", "@", "\t", "\r")  # a cell starting so is run by Excel and LibreOffice
MAX_TEXT = 100


def pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def safe_text(text: str) -> str:
    """``text`` as a CSV cell no spreadsheet runs as a formula: one line, at most 100 characters,
    a leading = + - @ quoted by an apostrophe (OWASP's advice on CSV injection)."""
    text = " ".join(text.split())[:MAX_TEXT]
    return "'" + text if text.startswith(SPREADSHEET_FORMULA) else text


def parse_row(line: str, columns: list[str]) -> dict[str, str] | None:
    """A CSV line as a judgement (its fields by column), or None when it is not one whole."""
    try:
        values = next(csv.reader([line]), [])
    except csv.Error:
        return None
    if len(values) != len(columns):
        return None
    row = dict(zip(columns, values))
    ok = row["a"].strip() and row["b"].strip() and row["outcome"].strip().lower() in OUTCOMES
    return row if ok else None


def mend_last_line(path: Path, columns: list[str]) -> None:
    """A last line without its newline is mended: completed when it parses, cut off when it does
    not (a judgement a kill interrupted)."""
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        row = parse_row(data[start:].decode("utf-8-sig", "replace"), columns) if start else ["header"]
        if row is not None:
            f.write(b"\n")
        else:
            f.truncate(start)
        f.flush()
        os.fsync(f.fileno())


def csv_line(values: list) -> str:
    """One CSV line (quoted where a value needs it), newline included."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def append_fsynced(path: Path, line: str) -> None:
    """One ``write`` on a file opened for appending, then fsync: a kill leaves at most a torn last line."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


class JudgementLog:
    """The comparisons CSV. ``pairs`` maps each judged pair (its two names, sorted) to its count."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise DataError(f"{path}: is a folder; --comparisons names a CSV file (created if missing)")
        if not self.path.parent.is_dir():
            raise DataError(f"{path}: no folder {self.path.parent} to write the comparisons file in")
        self.lock = FileLock(str(path) + ".lock")
        self.generation = 0  # bumped each time the rows are read anew (an undo rewrote the file)
        with self.lock:
            self.columns = self.start()
        self.reset()
        self.sync()

    def reset(self) -> None:
        self.generation += 1
        self.annotators: dict[str, int] = {}
        self.rows: list[tuple[str, str, str, str]] = []  # (a, b, outcome as written, annotator), in file order
        self.pairs: dict[tuple[str, str], int] = {}
        self.offset = 0

    def start(self) -> list[str]:
        """Check the file, mend a torn last line, write the header of a new file; its columns."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            self.append_line(",".join(COLUMNS) + "\n")
        bad = first_non_utf8(self.path)
        if bad is not None:
            raise DataError(f"{self.path}:{bad[0]}: not UTF-8 text (byte 0x{bad[2]:02x}); save the file as UTF-8")
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            columns = [c.strip().lower() for c in next(csv.reader([f.readline()]), [])]
        missing = [c for c in ("a", "b", "outcome") if c not in columns]
        if missing:
            raise DataError(f"{self.path}: the comparisons file has no column {', '.join(missing)} "
                            f"(its header: {','.join(columns)[:80]})")
        mend_last_line(self.path, columns)
        return columns

    def sync(self) -> None:
        """Read what was appended since the last call (whole lines only); the whole file again
        when it shrank (an undo rewrote it)."""
        size = self.path.stat().st_size
        if size < self.offset:
            self.reset()
        if size == self.offset:
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        end = data.rfind(b"\n") + 1
        lines = data[:end].decode("utf-8-sig", "replace").splitlines()
        if self.offset == 0:
            lines = lines[1:]  # the header
        self.offset += end
        for line in lines:
            row = parse_row(line, self.columns)
            if row is not None:
                a, b = row["a"].strip(), row["b"].strip()
                who = row.get("annotator", "").strip()
                self.rows.append((a, b, row["outcome"].strip().lower(), who))
                self.annotators[who] = self.annotators.get(who, 0) + 1
                self.pairs[pair_key(a, b)] = self.pairs.get(pair_key(a, b), 0) + 1

    def count(self) -> int:
        return len(self.rows)

    def by_annotator(self) -> dict[str, int]:
        return dict(self.annotators)

    def append_line(self, line: str) -> None:
        append_fsynced(self.path, line)

    def row_text(self, row: dict[str, str]) -> str:
        return csv_line([row.get(c, "") for c in self.columns])

    def append(self, row: dict[str, str]) -> str | None:
        """Write one judgement; None (and nothing written) when its pair was judged already,
        here or by another server on the file."""
        line = self.row_text(row)
        with self.lock:
            self.sync()
            key = pair_key(row["a"], row["b"])
            if key in self.pairs:
                return None
            self.append_line(line)
            self.sync()
        return line

    def remove(self, line: str) -> bool:
        """Take back ``line`` (the last time it occurs): the file is rewritten atomically."""
        with self.lock:
            text = self.path.read_bytes().decode("utf-8")
            k = text.rfind(line)
            if k < 0 or (k > 0 and text[k - 1] != "\n"):
                return False
            tmp = self.path.with_name(self.path.name + ".undo.tmp")
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(text[:k] + text[k + len(line):])
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self.reset()
            self.sync()
            return True
