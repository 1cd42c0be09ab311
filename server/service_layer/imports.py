"""Importing members (and their badges) from a CSV file, with a report line by line.

The file has a header naming its columns: `name` (required), `email`, `category`,
`badge_uid` (optional, in any order). Comma or semicolon separated, UTF-8 (a BOM is fine).
Each valid line is imported on its own (AddMember, then RegisterBadge) by the acting
person; a bad line is reported and skipped, it never stops the others.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from protocol import ProtocolError, normalize_uid
from server.domain.access import Principal, Role
from server.domain.errors import DomainError
from server.service_layer import commands as cmds
from server.service_layer import guards
from server.service_layer.messagebus import MessageBus

COLUMNS = ("name", "email", "category", "badge_uid")
MAX_BYTES = 2 * 1024 * 1024
MAX_ROWS = 10_000
MAX_NAME = 200
MAX_EMAIL = 320

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_HEADER_HELP = f"the first line must name the columns: {','.join(COLUMNS)} (name is required)"


class ImportFormatError(DomainError):
    """The file as a whole cannot be read: encoding, header, CSV syntax or size."""


@dataclass
class LineReport:
    line: int
    status: str  # imported | valid (dry run) | error | partial (member added, badge not)
    name: str | None = None
    member_id: str | None = None
    badge_id: int | None = None
    error: str | None = None


@dataclass
class ImportReport:
    dry_run: bool
    lines: list[LineReport] = field(default_factory=list)

    @property
    def imported(self) -> int:
        """Members added (lines imported, and partial ones whose badge failed)."""
        return sum(1 for line in self.lines if line.status in ("imported", "partial"))

    @property
    def valid(self) -> int:
        return sum(1 for line in self.lines if line.status in ("imported", "valid"))

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [{"line": r.line, "error": r.error} for r in self.lines if r.error is not None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "imported": self.imported,
            "valid": self.valid,
            "errors": self.errors,
            "lines": [asdict(line) for line in self.lines],
        }


@dataclass(frozen=True)
class MemberRow:
    name: str
    email: str | None
    category: str
    badge_uid: str | None


@dataclass(frozen=True)
class ParsedCsv:
    columns: tuple[str, ...]
    rows: list[tuple[int, list[str]]]  # (line number in the file, values)


def parse_csv(data: bytes) -> ParsedCsv:
    """The header and the non-blank rows, each with the file line it starts on."""
    if len(data) > MAX_BYTES:
        raise ImportFormatError(f"the file is larger than {MAX_BYTES // (1024 * 1024)} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(
            f"the file is not UTF-8 text (bad byte at offset {exc.start}): save it as 'CSV UTF-8'"
        ) from exc
    if "\x00" in text:
        raise ImportFormatError("the file contains NUL characters: it is not a CSV text file")
    if not text.strip():
        raise ImportFormatError(f"the file is empty: {_HEADER_HELP}")
    first = text.lstrip("\r\n").splitlines()[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    try:
        start = reader.line_num + 1
        for values in reader:
            if not any(v.strip() for v in values):
                start = reader.line_num + 1
                continue
            if header is None:
                header = values
            else:
                rows.append((start, values))
                if len(rows) > MAX_ROWS:
                    raise ImportFormatError(f"more than {MAX_ROWS} lines: split the file")
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ImportFormatError(f"line {reader.line_num}: not valid CSV ({exc})") from exc
    if header is None:
        raise ImportFormatError(f"missing header: {_HEADER_HELP}")
    return ParsedCsv(_columns(header), rows)


def _columns(header: list[str]) -> tuple[str, ...]:
    columns = tuple(h.strip().lower() for h in header)
    if "name" not in columns:
        raise ImportFormatError(f"missing header: {_HEADER_HELP}")
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        shown = ", ".join(repr(c[:40]) for c in unknown[:5])
        raise ImportFormatError(f"unknown column(s) {shown}: {_HEADER_HELP}")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ImportFormatError(f"column(s) named twice: {', '.join(repeated)}")
    return columns


def _row(columns: tuple[str, ...], values: list[str]) -> MemberRow:
    """The line's values, checked on their own (no database)."""
    if len(values) > len(columns):
        raise DomainError(
            f"{len(values)} values but the header has {len(columns)} columns ({','.join(columns)})"
        )
    cells = {c: v.strip() for c, v in zip(columns, values, strict=False)}
    name = cells.get("name", "")
    if not name:
        raise DomainError("name is empty")
    if len(name) > MAX_NAME or _CONTROL.search(name):
        raise DomainError(f"name must be at most {MAX_NAME} printable characters")
    email = cells.get("email", "").lower() or None
    if email is not None and (len(email) > MAX_EMAIL or not EMAIL_PATTERN.match(email)):
        raise DomainError(f"not an email address: {email[:80]!r}")
    category = cells.get("category", "") or "member"
    raw_uid = cells.get("badge_uid", "")
    badge_uid = None
    if raw_uid:
        try:
            badge_uid = normalize_uid(raw_uid)
        except ProtocolError as exc:
            raise DomainError(f"badge_uid {raw_uid[:60]!r}: {exc.message}") from exc
    return MemberRow(name, email, category, badge_uid)


class _Seen:
    """Emails and badges taken by earlier lines of the same file."""

    def __init__(self) -> None:
        self.emails: dict[str, int] = {}
        self.badges: dict[str, int] = {}

    def check(self, row: MemberRow) -> None:
        if row.email and row.email in self.emails:
            raise DomainError(f"email {row.email} is already on line {self.emails[row.email]}")
        if row.badge_uid and row.badge_uid in self.badges:
            raise DomainError(
                f"badge {row.badge_uid} is already on line {self.badges[row.badge_uid]}"
            )

    def add(self, line: int, row: MemberRow) -> None:
        if row.email:
            self.emails[row.email] = line
        if row.badge_uid:
            self.badges[row.badge_uid] = line


def _check_against_lab(bus: MessageBus, row: MemberRow) -> None:
    """What the commands would refuse, checked before the first of them runs, so that a
    line is imported whole or not at all."""
    with bus.uow_factory() as uow:
        if uow.categories.get(row.category) is None:
            raise DomainError(f"unknown member category {row.category!r}")
        if row.email and uow.members.by_email(row.email) is not None:
            raise DomainError(f"a member with email {row.email} already exists")
        if row.badge_uid and uow.badges.by_uid(row.badge_uid) is not None:
            raise DomainError(f"badge {row.badge_uid} is already registered")


def import_members(
    bus: MessageBus, data: bytes, actor: Principal | None, *, dry_run: bool = False
) -> ImportReport:
    """Import (or with `dry_run` only check) every line; raises ImportFormatError when the
    file as a whole is unreadable."""
    guards.require(actor, Role.MANAGER)
    parsed = parse_csv(data)
    report = ImportReport(dry_run=dry_run)
    seen = _Seen()
    for line, values in parsed.rows:
        entry = LineReport(line=line, status="error")
        report.lines.append(entry)
        name = dict(zip(parsed.columns, values, strict=False)).get("name", "").strip()
        entry.name = _CONTROL.sub("", name)[:MAX_NAME] or None
        try:
            row = _row(parsed.columns, values)
            seen.check(row)
            _check_against_lab(bus, row)
        except DomainError as exc:
            entry.error = str(exc)
            continue
        seen.add(line, row)
        if dry_run:
            entry.status = "valid"
            continue
        try:
            entry.member_id = bus.handle(
                cmds.AddMember(row.name, email=row.email, category=row.category, actor=actor)
            )
        except DomainError as exc:
            entry.error = str(exc)
            continue
        if row.badge_uid:
            try:
                entry.badge_id = bus.handle(
                    cmds.RegisterBadge(entry.member_id, row.badge_uid, actor=actor)
                )
            except DomainError as exc:
                entry.status = "partial"
                entry.error = f"member {entry.member_id} added, but not the badge: {exc}"
                continue
        entry.status = "imported"
    return report


def format_report(report: ImportReport) -> str:
    """The report as text lines for a terminal."""
    out: list[str] = []
    for r in report.lines:
        if r.status == "imported":
            badge = f", badge {r.badge_id}" if r.badge_id is not None else ""
            out.append(f"line {r.line}: imported {r.name} (member {r.member_id}{badge})")
        elif r.status == "valid":
            out.append(f"line {r.line}: valid {r.name}")
        else:
            out.append(f"line {r.line}: {r.status}: {r.error}")
    if report.dry_run:
        out.append(f"dry run: {report.valid} valid, {len(report.errors)} with errors")
    else:
        out.append(f"imported {report.imported}, {len(report.errors)} with errors")
    return "\n".join(out)
