"""The credits ledger of one member: append-only, hash-chained, balance derived.

Each entry's hash is SHA-256 over its canonical fields and the previous entry's hash,
so changing, removing or reordering any entry breaks the chain from there on.
Truncating the newest entries is seen against an anchor kept elsewhere (an approved
statement records the hash of the entry that spent its credits).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

GENESIS = "0" * 64


class EntryKind(StrEnum):
    EARN = "earn"  # a contribution credited
    SPEND = "spend"  # credits used by an approved statement
    EXPIRE = "expire"  # earned credits not used in time
    TOPUP = "topup"  # money paid in advance
    ADJUST = "adjust"  # the treasurer's correction, with a reason


_SIGN = {
    EntryKind.EARN: 1,
    EntryKind.TOPUP: 1,
    EntryKind.SPEND: -1,
    EntryKind.EXPIRE: -1,
    EntryKind.ADJUST: 0,  # either sign, never zero
}


class LedgerError(ValueError):
    """An entry that would break the ledger's rules."""


@dataclass(frozen=True)
class LedgerEntry:
    member_id: str
    seq: int
    kind: EntryKind
    amount_cents: int
    minutes: int
    actor_id: str | None
    reason: str
    source_type: str
    source_id: str
    at: datetime
    prev_hash: str
    hash: str


def entry_hash(
    *,
    member_id: str,
    seq: int,
    kind: str,
    amount_cents: int,
    minutes: int,
    actor_id: str | None,
    reason: str,
    source_type: str,
    source_id: str,
    at: datetime,
    prev_hash: str,
) -> str:
    """SHA-256 of the canonical JSON of the entry's fields and the previous hash."""
    fields = {
        "member_id": member_id,
        "seq": seq,
        "kind": str(kind),
        "amount_cents": amount_cents,
        "minutes": minutes,
        "actor_id": actor_id,
        "reason": reason,
        "source_type": source_type,
        "source_id": source_id,
        "at": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "prev_hash": prev_hash,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _recomputed(entry: LedgerEntry) -> str:
    return entry_hash(
        member_id=entry.member_id,
        seq=entry.seq,
        kind=entry.kind,
        amount_cents=entry.amount_cents,
        minutes=entry.minutes,
        actor_id=entry.actor_id,
        reason=entry.reason,
        source_type=entry.source_type,
        source_id=entry.source_id,
        at=entry.at,
        prev_hash=entry.prev_hash,
    )


def balance(entries: Sequence[LedgerEntry]) -> int:
    """The member's credit balance in cents: the sum of the entries."""
    return sum(e.amount_cents for e in entries)


def append(
    chain: Sequence[LedgerEntry],
    *,
    member_id: str,
    kind: EntryKind,
    amount_cents: int,
    reason: str,
    source_type: str,
    source_id: str,
    at: datetime,
    actor_id: str | None = None,
    minutes: int = 0,
    chain_balance: int | None = None,
) -> LedgerEntry:
    """The next entry of the member's chain; refuses a wrong sign or a negative balance.

    `chain_balance`, when given, is `balance(chain)` as the caller keeps it (a batch
    appending many entries to long chains need not sum each chain again)."""
    sign = _SIGN[kind]
    if amount_cents == 0 or (sign and amount_cents * sign < 0):
        raise LedgerError(
            f"a {kind} entry has a {'positive' if sign > 0 else 'negative'} amount"
            if sign
            else "an adjustment is never zero"
        )
    if not reason.strip():
        raise LedgerError("every ledger entry needs a reason")
    if minutes < 0:
        raise LedgerError("minutes given are never negative")
    current = balance(chain) if chain_balance is None else chain_balance
    if current + amount_cents < 0:
        raise LedgerError("the balance would become negative")
    prev = chain[-1] if chain else None
    seq = prev.seq + 1 if prev else 1
    prev_hash = prev.hash if prev else GENESIS
    fields = dict(
        member_id=member_id, seq=seq, kind=kind, amount_cents=amount_cents, minutes=minutes,
        actor_id=actor_id, reason=reason, source_type=source_type, source_id=source_id,
        at=at, prev_hash=prev_hash,
    )  # fmt: skip
    return LedgerEntry(**fields, hash=entry_hash(**fields))  # type: ignore[arg-type]


def verify(entries: Sequence[LedgerEntry]) -> list[str]:
    """Every break of one member's chain, in order; empty when the chain is intact."""
    problems = []
    prev_hash, running = GENESIS, 0
    for expected_seq, entry in enumerate(entries, start=1):
        where = f"{entry.member_id} #{entry.seq}"
        if entry.seq != expected_seq:
            problems.append(f"{where}: expected entry #{expected_seq} (gap or reorder)")
        if entry.prev_hash != prev_hash:
            problems.append(f"{where}: does not follow the previous entry's hash")
        if _recomputed(entry) != entry.hash:
            problems.append(f"{where}: content does not match its hash (altered)")
        running += entry.amount_cents
        if running < 0:
            problems.append(f"{where}: balance below zero")
        prev_hash = entry.hash
    return problems


def add_months(instant: datetime, months: int) -> datetime:
    """The same instant `months` later, the day clamped to the month's last day."""
    total = instant.month - 1 + months
    year, month = instant.year + total // 12, total % 12 + 1
    day = min(instant.day, _days_in_month(year, month))
    return instant.replace(year=year, month=month, day=day)


def _days_in_month(year: int, month: int) -> int:
    following = datetime(year + (month == 12), month % 12 + 1, 1)
    return (following - datetime(year, month, 1)).days


def unspent_earnings(entries: Sequence[LedgerEntry]) -> dict[int, int]:
    """Per earn entry (by seq), the cents not yet used, debits taken oldest-first.

    An expiry uses up the earn entry it names; every other debit uses the oldest credits
    (earnings and top-ups) first.
    """
    remaining: dict[int, int] = {}
    earn_seqs: set[int] = set()
    for entry in entries:
        if entry.amount_cents > 0:
            remaining[entry.seq] = entry.amount_cents
            if entry.kind is EntryKind.EARN:
                earn_seqs.add(entry.seq)
            continue
        debit = -entry.amount_cents
        if entry.kind is EntryKind.EXPIRE and entry.source_id.isdigit():
            target = int(entry.source_id)
            taken = min(debit, remaining.get(target, 0))
            remaining[target] = remaining.get(target, 0) - taken
            debit -= taken
        for seq in sorted(remaining):
            taken = min(debit, remaining[seq])
            remaining[seq] -= taken
            debit -= taken
            if not debit:
                break
    return {seq: left for seq, left in remaining.items() if seq in earn_seqs and left > 0}


def due_expiries(
    entries: Sequence[LedgerEntry], months: int, now: datetime
) -> list[tuple[int, int]]:
    """(earn seq, cents) of credits earned `months` or more ago and still unspent."""
    by_seq = {e.seq: e for e in entries}
    return [
        (seq, left)
        for seq, left in sorted(unspent_earnings(entries).items())
        if add_months(by_seq[seq].at, months) <= now
    ]
