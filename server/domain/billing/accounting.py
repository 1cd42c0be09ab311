"""The accounting journal of approved documents and credits, as CSV or the French FEC.

Entries (French associations' chart of accounts; every entry balances):
- statement (journal VT): debit 411 member (net due), debit 467 member (credits
  applied), credit 706 (charges);
- credit note (VT): debit 706, credit 411 member;
- credits earned or added (OD): debit 658, credit 467 member; credits expired or
  removed: debit 467 member, credit 758; a top-up paid: debit 512, credit 467 member;
- optionally, volunteer time valued (BV): debit 864, credit 875.
Zero-amount lines are left out; an entry with nothing to book is not written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from server.domain.billing.ledger import EntryKind
from server.domain.billing.money import format_amount

FEC_COLUMNS = (
    "JournalCode", "JournalLib", "EcritureNum", "EcritureDate", "CompteNum", "CompteLib",
    "CompAuxNum", "CompAuxLib", "PieceRef", "PieceDate", "EcritureLib", "Debit", "Credit",
    "EcritureLet", "DateLet", "ValidDate", "Montantdevise", "Idevise",
)  # fmt: skip

JOURNALS = {"VT": "Ventes", "OD": "Operations diverses", "BV": "Benevolat"}
ACCOUNTS = {
    "411": "Usagers",
    "467": "Credits de contribution",
    "512": "Banque",
    "658": "Charges diverses de gestion courante",
    "706": "Prestations de services",
    "758": "Produits divers de gestion courante",
    "864": "Personnel benevole",
    "875": "Benevolat",
}
_AUXILIARY = {"411", "467"}


class DocumentKind(StrEnum):
    STATEMENT = "statement"
    CREDIT_NOTE = "credit_note"


@dataclass(frozen=True)
class Document:
    """An approved statement or credit note, as the books need it."""

    number: int
    kind: DocumentKind
    member_id: str
    member_name: str
    approved_on: date
    charges_cents: int
    credits_applied_cents: int
    refund_cents: int = 0  # credit notes
    label: str = ""

    @property
    def reference(self) -> str:
        return f"{'F' if self.kind is DocumentKind.STATEMENT else 'AV'}{self.number:06d}"


@dataclass(frozen=True)
class CreditMovement:
    """A ledger entry that changes what the lab owes a member in credits."""

    member_id: str
    member_name: str
    seq: int
    kind: EntryKind
    amount_cents: int
    minutes: int
    on: date
    reason: str


@dataclass(frozen=True)
class JournalLine:
    journal: str
    entry_number: int
    on: date
    account: str
    aux_id: str
    aux_name: str
    reference: str
    piece_date: date
    label: str
    debit_cents: int
    credit_cents: int
    valid_on: date


@dataclass(frozen=True)
class _Leg:
    account: str
    debit: int
    credit: int


def _document_legs(doc: Document) -> list[_Leg]:
    if doc.kind is DocumentKind.CREDIT_NOTE:
        return [_Leg("706", doc.refund_cents, 0), _Leg("411", 0, doc.refund_cents)]
    net = doc.charges_cents - doc.credits_applied_cents
    return [
        _Leg("411", net, 0),
        _Leg("467", doc.credits_applied_cents, 0),
        _Leg("706", 0, doc.charges_cents),
    ]


def _movement_legs(move: CreditMovement) -> list[_Leg]:
    amount = abs(move.amount_cents)
    if move.kind is EntryKind.TOPUP:
        return [_Leg("512", amount, 0), _Leg("467", 0, amount)]
    if move.amount_cents > 0:
        return [_Leg("658", amount, 0), _Leg("467", 0, amount)]
    return [_Leg("467", amount, 0), _Leg("758", 0, amount)]


def journal(
    documents: Iterable[Document],
    movements: Iterable[CreditMovement] = (),
    *,
    volunteer_cents_per_hour: int | None = None,
) -> list[JournalLine]:
    """The journal lines, entries numbered from 1 per journal in date order.

    Spending credits is booked inside the statement entry, so only the other movements
    are taken from `movements`. With `volunteer_cents_per_hour`, the minutes given are
    valued on 864/875.
    """
    pending: list[tuple[str, date, str, str, str, str, list[_Leg]]] = []
    for doc in documents:
        label = doc.label or f"{doc.reference} {doc.member_name}"
        pending.append(("VT", doc.approved_on, doc.reference, doc.member_id, doc.member_name,
                        label, _document_legs(doc)))  # fmt: skip
    for move in movements:
        if move.kind is EntryKind.SPEND:
            continue
        ref = f"CR-{move.member_id}-{move.seq}"
        pending.append(("OD", move.on, ref, move.member_id, move.member_name, move.reason,
                        _movement_legs(move)))  # fmt: skip
        if volunteer_cents_per_hour and move.minutes:
            value = (volunteer_cents_per_hour * move.minutes * 2 + 60) // 120
            pending.append(("BV", move.on, ref, move.member_id, move.member_name, move.reason,
                            [_Leg("864", value, 0), _Leg("875", 0, value)]))  # fmt: skip
    pending.sort(key=lambda p: (p[0], p[1], p[2]))
    lines: list[JournalLine] = []
    numbers: dict[str, int] = {}
    for code, on, ref, aux_id, aux_name, label, legs in pending:
        legs = [leg for leg in legs if leg.debit or leg.credit]
        if not legs:
            continue
        numbers[code] = numbers.get(code, 0) + 1
        for leg in legs:
            aux = leg.account in _AUXILIARY
            line = JournalLine(
                journal=code, entry_number=numbers[code], on=on, account=leg.account,
                aux_id=aux_id if aux else "", aux_name=aux_name if aux else "",
                reference=ref, piece_date=on, label=label, debit_cents=leg.debit,
                credit_cents=leg.credit, valid_on=on,
            )  # fmt: skip
            lines.append(line)
    return lines


def _fec_text(value: str) -> str:
    """FEC fields may not hold the separators or line breaks."""
    return " ".join(value.replace("|", " ").replace("\t", " ").split())


def fec_rows(lines: Sequence[JournalLine], currency: str = "EUR") -> list[list[str]]:
    """The FEC rows: the 18 columns, amounts with a decimal comma, dates YYYYMMDD.

    Montantdevise/Idevise stay empty: amounts are in the books' own currency.
    """
    del currency  # the lab's books are kept in its own currency
    rows = [list(FEC_COLUMNS)]
    for line in lines:
        rows.append([
            line.journal, JOURNALS[line.journal], f"{line.journal}{line.entry_number:06d}",
            line.on.strftime("%Y%m%d"), line.account, ACCOUNTS[line.account],
            _fec_text(line.aux_id), _fec_text(line.aux_name), _fec_text(line.reference),
            line.piece_date.strftime("%Y%m%d"), _fec_text(line.label),
            format_amount(line.debit_cents, ","), format_amount(line.credit_cents, ","),
            "", "", line.valid_on.strftime("%Y%m%d"), "", "",
        ])  # fmt: skip
    return rows


def fec_text(lines: Sequence[JournalLine], separator: str = "|") -> str:
    """The FEC file: one header line, then one line per journal line, CRLF-free."""
    if separator not in ("|", "\t"):
        raise ValueError("the FEC separator is | or a tab")
    return "".join(separator.join(row) + "\n" for row in fec_rows(lines))
