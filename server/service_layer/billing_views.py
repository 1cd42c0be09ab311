"""Read models of billing: a statement as shown or printed, CSV, the journal, FEC."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime

from server.adapters.orm_billing import BillingLine, BillingPeriod, BillingStatement
from server.domain.billing import accounting
from server.domain.billing.ledger import EntryKind
from server.domain.billing.money import format_amount
from server.domain.billing.policy import BillingPolicy
from server.domain.errors import NotFoundError
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork


@dataclass(frozen=True)
class StatementView:
    statement: BillingStatement
    lines: list[BillingLine]
    member_name: str
    period: BillingPeriod
    refers_to_number: int | None

    @property
    def reference(self) -> str:
        s = self.statement
        if s.number is None:
            return f"DRAFT-{s.id}"
        return f"{'AV' if s.kind == 'credit_note' else 'F'}{s.number:06d}"


def statement_view(uow: SqlAlchemyUnitOfWork, statement_id: int) -> StatementView:
    statement = uow.billing.statement(statement_id)
    if statement is None:
        raise NotFoundError(f"no statement {statement_id}")
    period = uow.billing.period(statement.period_id)
    assert period is not None
    names = uow.billing.member_names({statement.member_id})
    original = uow.billing.statement(statement.refers_to_id) if statement.refers_to_id else None
    return StatementView(
        statement=statement,
        lines=list(uow.billing.lines(statement.id)),
        member_name=names.get(statement.member_id, statement.member_id),
        period=period,
        refers_to_number=original.number if original else None,
    )


def _local(instant: datetime, policy: BillingPolicy) -> str:
    return instant.astimezone(policy.tz).strftime("%Y-%m-%d %H:%M")


LINE_COLUMNS = (
    "statement",
    "status",
    "member_id",
    "session_id",
    "machine_id",
    "started_local",
    "ended_local",
    "metered_seconds",
    "billed_minutes",
    "busy_billed_minutes",
    "free_minutes",
    "rate_id",
    "multiplier",
    "amount",
    "computed_amount",
    "adjustment_reason",
    "late",
)


def period_csv(uow: SqlAlchemyUnitOfWork, period_id: int, policy: BillingPolicy) -> str:
    """Every statement line of the period, then one total row per statement."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LINE_COLUMNS)
    statements = {s.id: s for s in uow.billing.statements(period_id=period_id)}
    for line, member_id, number in uow.billing.period_lines(period_id):
        status = statements[line.statement_id].status
        writer.writerow(
            [
                number or f"draft-{line.statement_id}",
                status,
                member_id,
                line.session_id,
                line.machine_id,
                _local(line.started_at, policy),
                _local(line.ended_at, policy),
                line.metered_seconds,
                line.billed_minutes,
                line.busy_billed_minutes,
                line.free_minutes,
                line.rate_id or "",
                f"{line.multiplier_bp / 10_000:.4f}",
                format_amount(line.amount_cents),
                format_amount(line.computed_cents),
                line.adjustment_reason or "",
                int(line.late),
            ]
        )
    writer.writerow([])
    writer.writerow(
        [
            "statement",
            "kind",
            "status",
            "member_id",
            "charges",
            "credits_applied",
            "net_due",
            "currency",
            "refers_to",
        ]
    )
    for s in statements.values():
        ref = statements.get(s.refers_to_id) if s.refers_to_id else None
        writer.writerow(
            [
                s.number or f"draft-{s.id}",
                s.kind,
                s.status,
                s.member_id,
                format_amount(s.charges_cents),
                format_amount(s.credits_applied_cents),
                format_amount(s.net_cents),
                s.currency,
                ref.number if ref else "",
            ]
        )
    return out.getvalue()


def period_journal(
    uow: SqlAlchemyUnitOfWork, period_id: int, policy: BillingPolicy
) -> list[accounting.JournalLine]:
    """Journal of the period: its approved statements and credit notes, and the credit
    movements dated within it."""
    period = uow.billing.period(period_id)
    if period is None:
        raise NotFoundError(f"no billing period {period_id}")
    approved = uow.billing.statements(period_id=period_id, status="approved")
    names = uow.billing.member_names({s.member_id for s in approved})
    documents = []
    for s in approved:
        assert s.number is not None and s.approved_at is not None
        kind = accounting.DocumentKind(s.kind)
        documents.append(
            accounting.Document(
                number=s.number,
                kind=kind,
                member_id=s.member_id,
                member_name=names.get(s.member_id, s.member_id),
                approved_on=s.approved_at.astimezone(policy.tz).date(),
                charges_cents=max(s.charges_cents, 0),
                credits_applied_cents=s.credits_applied_cents,
                refund_cents=-s.charges_cents if kind is accounting.DocumentKind.CREDIT_NOTE else 0,
            )
        )
    moves = []
    chains = uow.billing.chains()
    names |= uow.billing.member_names(set(chains) - set(names))
    for member_id, chain in chains.items():
        for e in chain:
            if period.starts_at <= e.at < period.ends_at and e.kind is not EntryKind.SPEND:
                moves.append(
                    accounting.CreditMovement(
                        member_id,
                        names.get(member_id, member_id),
                        e.seq,
                        e.kind,
                        e.amount_cents,
                        e.minutes,
                        e.at.astimezone(policy.tz).date(),
                        e.reason,
                    )
                )
    return accounting.journal(
        documents, moves, volunteer_cents_per_hour=policy.volunteer_cents_per_hour
    )


JOURNAL_COLUMNS = (
    "journal",
    "entry",
    "date",
    "account",
    "account_name",
    "aux",
    "aux_name",
    "reference",
    "label",
    "debit",
    "credit",
)


def journal_csv(lines: list[accounting.JournalLine]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(JOURNAL_COLUMNS)
    for x in lines:
        writer.writerow(
            [
                x.journal,
                x.entry_number,
                x.on.isoformat(),
                x.account,
                accounting.ACCOUNTS[x.account],
                x.aux_id,
                x.aux_name,
                x.reference,
                x.label,
                format_amount(x.debit_cents),
                format_amount(x.credit_cents),
            ]
        )
    return out.getvalue()


def period_export(
    uow: SqlAlchemyUnitOfWork, period_id: int, policy: BillingPolicy, fmt: str
) -> tuple[str, str, str]:
    """(body, media type, file name) of a period's download: `csv` (statement lines and
    totals), `journal` (the accounting journal as CSV), `fec` / `fec-tab` (the French FEC,
    `|` or tab separated)."""
    if fmt == "csv":
        return period_csv(uow, period_id, policy), "text/csv", "statements.csv"
    lines = period_journal(uow, period_id, policy)
    if fmt == "journal":
        return journal_csv(lines), "text/csv", "journal.csv"
    sep = "|" if fmt == "fec" else "\t"
    return accounting.fec_text(lines, sep), "text/plain", "FEC.txt"
