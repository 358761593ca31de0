"""Row-level integrity of results.csv: seal each row when writing, check each row when reading.

Why: results.csv is rewritten atomically, but a file can still be cut (a copy interrupted, a disk
that lost its tail, a hand edit) and a cut row must never count as a finished case. pandas reads
``<key>,swin,swin,na`` as a row with empty cells; ``--resume`` would skip that case forever and the
report would show a blank row. So every row carries a CRC-32 of its other cells as its last cell
(``row_crc32``), and a row is trusted only when it has every field, its checksum matches (or is
empty: files written before the checksum, or a row a person edited and vouches for by clearing it),
its identity columns have their types, its status is known and its case_key is the hash of its
identity. A row that fails is dropped with a warning naming it, and ``--resume`` runs its case
again: nothing is repaired by guessing.
"""
from __future__ import annotations

import csv
import io
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from . import UserError
from .results_schema import (CASE_KEY, ID_COLUMNS, OPTIONS, ROW_CHECK, STATUS, STATUSES, TASK, TOKENS, HEIGHT,
                             WIDTH, FORM, identity_key)

INT_IDENTITY = ("height", "width", "tokens", "batch_size", "dim", "num_heads")
TEXT_IDENTITY = ("mechanism", "label", "backend", "dtype", "device", "mode")
_KEY = re.compile(r"^[0-9a-f]{16}$")
_INT = re.compile(r"^[0-9]+(\.0*)?$")  # "14.0" is 14: files rewritten by older versions hold such cells


class DamagedFile(UserError):
    """A results file that cannot be read at all (not text, no header): one line, exit 2."""


@dataclass(frozen=True)
class Rejected:
    """A row that is not trusted: where it is, which case it claims to be, and why."""

    line: int
    case_key: str | None
    reason: str

    def describe(self) -> str:
        key = f" (case {self.case_key})" if self.case_key else ""
        return f"line {self.line}{key}: {self.reason}"


def checksum(cells: list[str]) -> str:
    return format(zlib.crc32("\x1f".join(cells).encode("utf-8")), "08x")


def seal(csv_text: str) -> str:
    """``csv_text`` (a header and rows, as pandas writes them) with a ``row_crc32`` last column."""
    rows = list(csv.reader(io.StringIO(csv_text)))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if not rows:
        return csv_text
    writer.writerow([*rows[0], ROW_CHECK])
    for row in rows[1:]:
        writer.writerow([*row, checksum(row)])
    return out.getvalue()


def _identity_problem(cells: dict[str, str]) -> str | None:
    """Why the identity of a complete row cannot be trusted, or None."""
    key = cells.get(CASE_KEY, "")
    if not _KEY.match(key):
        return f"case_key {key!r} is not a case key"
    ident: dict[str, object] = {}
    for col in TEXT_IDENTITY:
        if not cells.get(col):
            return f"{col} is empty"
        ident[col] = cells[col]
    for col in INT_IDENTITY:
        text = cells.get(col, "")
        if not _INT.match(text) or int(float(text)) < 1:
            return f"{col} {text!r} is not a positive integer"
        ident[col] = int(float(text))
    # A whole-backbone row (``model``) counts pixels in height x width and its first stage's tokens,
    # and its key hashes the model's build; its checksum is what vouches for it.
    model_row = bool(cells.get("model"))
    if not model_row and ident[TOKENS] != ident[HEIGHT] * ident[WIDTH]:  # type: ignore[operator]
        return f"tokens {ident[TOKENS]} is not height x width"
    try:
        if not isinstance(json.loads(cells.get(OPTIONS, "")), dict):
            raise ValueError
    except ValueError:
        return f"options {cells.get(OPTIONS, '')!r} is not a JSON mapping"
    ident[OPTIONS] = cells[OPTIONS]
    ident[TASK] = cells.get(TASK) or None
    ident[FORM] = cells.get(FORM) or None
    status = cells.get(STATUS, "")
    if status not in STATUSES:
        return f"status {status!r} is not one of {', '.join(STATUSES)}"
    if not model_row and identity_key(ident) != key:
        return "case_key does not match the row's identity columns (edited or damaged)"
    return None


def check_text(text: str, name: str) -> tuple[list[str], list[list[str]], list[Rejected]]:
    """(header without the checksum, trusted rows, rejected rows) of results.csv ``text``."""
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise DamagedFile(f"{name}: damaged ({exc}); move it aside and start a new run, or restore it from a copy") from None
    rows_lines: list[int] = []
    reader = csv.reader(io.StringIO(text))
    for _ in reader:
        rows_lines.append(reader.line_num)
    header = rows[0]
    missing = [c for c in (CASE_KEY, *ID_COLUMNS, STATUS) if c not in header]
    if missing or len(set(header)) != len(header):
        what = f"missing {', '.join(missing)}" if missing else "a column appears twice"
        raise DamagedFile(f"{name}: damaged: its first line is not a results header ({what}); nothing was changed. "
                          "Restore the file from a copy, or move it aside and run again")
    sealed = header[-1] == ROW_CHECK
    width = len(header)
    good: list[list[str]] = []
    rejected: list[Rejected] = []
    seen: dict[str, int] = {}
    cut_tail = not text.endswith(("\n", "\r"))
    for i, row in enumerate(rows[1:], start=1):
        line = rows_lines[i]
        if not row or row == [""]:
            continue
        claimed = row[0] if row and _KEY.match(row[0] or "") else None
        if len(row) != width:
            how = "cut off" if (i == len(rows) - 1 and cut_tail) else "damaged"
            rejected.append(Rejected(line, claimed, f"half-written row ({how}: {len(row)} of {width} fields)"))
            continue
        if sealed:
            stored, row = row[-1], row[:-1]
            if stored and stored != checksum(row):
                rejected.append(Rejected(line, claimed, "row checksum does not match (cut, damaged or edited)"))
                continue
        problem = _identity_problem(dict(zip(header, row)))
        if problem:
            rejected.append(Rejected(line, claimed, problem))
            continue
        if row[0] in seen:
            rejected.append(Rejected(line, row[0], f"second row for the case of line {seen[row[0]]}"))
            continue
        seen[row[0]] = line
        good.append(row)
    return (header[:-1] if sealed else header), good, rejected


def read_checked(path: Path) -> tuple[str, list[Rejected]]:
    """results.csv at ``path`` as CSV text of its trusted rows only, and the rows it rejected."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DamagedFile(f"{path}: damaged: not a text file; restore it from a copy, or move it aside and "
                          "start a new run") from None
    if "\x00" in text:
        raise DamagedFile(f"{path}: damaged: holds NUL bytes (a cut or zeroed file); restore it from a copy, or "
                          "move it aside and start a new run")
    if not text.strip():
        return "", []
    header, good, rejected = check_text(text, str(path))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(good)
    return out.getvalue(), rejected
