"""Reading a user's table files (CSV, or Parquet with pyarrow) row by row, with one-line errors
that name the file and the line: what the comparisons and labels readers share."""
from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DataError


def read_rows(path: Path, required: tuple[str, ...]) -> tuple[list[str], Iterator[tuple[str, dict]]]:
    """Column names and (location, row) pairs of a CSV or Parquet file; column names lower-cased.

    Raises:
        DataError: missing or unreadable file, missing columns.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'relcomp[parquet]')") from None
        try:
            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
            raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
        cols = [c.strip().lower() for c in table.column_names]
        require_columns(path, cols, required)
        data = table.to_pydict()
        keys = list(data)
        rows = ((f"row {r + 1}", {c: data[k][r] for c, k in zip(cols, keys)}) for r in range(table.num_rows))
        return cols, rows
    bad = first_non_utf8(path)
    if bad is not None:
        line, col, byte = bad
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{byte:02x} at column {col}); save the file as UTF-8")
    try:
        f = open(path, newline="", encoding="utf-8-sig")
        header = next(csv.reader([f.readline()]), [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV file ({type(e).__name__})") from None
    cols = [c.strip().lower() for c in header]
    if not cols:
        f.close()
        raise DataError(f"{path}: empty file; expected a header line with columns {', '.join(required)}")
    try:
        require_columns(path, cols, required)
    except DataError:
        f.close()
        raise

    def rows() -> Iterator[tuple[str, dict]]:
        with f:
            reader = csv.reader(f)
            line = 1
            try:
                for values in reader:
                    line = reader.line_num + 1  # the header was line 1
                    if not values or all(not v.strip() for v in values):
                        continue
                    if len(values) != len(cols):
                        yield f"{line}", {"__error__": f"{len(values)} fields where the header has {len(cols)}"}
                        continue
                    yield f"{line}", dict(zip(cols, values))
            except (csv.Error, UnicodeDecodeError) as e:
                raise DataError(f"{path}:{line + 1}: not valid CSV ({type(e).__name__}: {e})") from None

    return cols, rows()


def first_non_utf8(path: Path) -> tuple[int, int, int] | None:
    """(line, column, byte) of the first byte that is not UTF-8 text, or None; read line by line."""
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    return number, e.start + 1, raw[e.start]
    except OSError:
        return None  # reported by the reader
    return None


def require_columns(path: Path, cols: list[str], required: tuple[str, ...]) -> None:
    twice = sorted({c for c in cols if cols.count(c) > 1})
    if twice:
        raise DataError(f"{path}: column(s) {', '.join(twice)} named twice in the header; each column once")
    missing = [c for c in required if c not in cols]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(cols) or 'none'}")


def cell_text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return "" if v is None else str(v).strip()
