from __future__ import annotations

from collections import defaultdict
from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from server.domain.billing.accounting import (
    FEC_COLUMNS,
    CreditMovement,
    Document,
    DocumentKind,
    fec_rows,
    fec_text,
    journal,
)
from server.domain.billing.ledger import EntryKind

documents = st.lists(
    st.builds(
        lambda n, charges, share, kind: Document(
            number=n,
            kind=kind,
            member_id="ada",
            member_name="Ada | L",
            approved_on=date(2026, 3, 1),
            charges_cents=charges,
            credits_applied_cents=charges * share // 100,
            refund_cents=charges,
        ),
        st.integers(1, 999),
        st.integers(0, 10**7),
        st.integers(0, 100),
        st.sampled_from(list(DocumentKind)),
    ),
    max_size=10,
)
movements = st.lists(
    st.builds(
        lambda seq, amount, kind: CreditMovement(
            "ada",
            "Ada",
            seq,
            kind,
            amount if kind is not EntryKind.EXPIRE else -amount,
            60,
            date(2026, 3, 2),
            "reason",
        ),
        st.integers(1, 99),
        st.integers(1, 10**6),
        st.sampled_from([EntryKind.EARN, EntryKind.EXPIRE, EntryKind.TOPUP, EntryKind.SPEND]),
    ),
    max_size=10,
)


@given(documents, movements)
def test_journal_every_entry_balances(docs: list[Document], moves: list[CreditMovement]) -> None:
    sums: dict[tuple[str, int], int] = defaultdict(int)
    for line in journal(docs, moves, volunteer_cents_per_hour=1500):
        assert line.debit_cents >= 0 and line.credit_cents >= 0
        sums[(line.journal, line.entry_number)] += line.debit_cents - line.credit_cents
    assert all(v == 0 for v in sums.values())


@given(documents, movements)
def test_fec_rows_have_the_18_columns_and_no_separator_inside(
    docs: list[Document], moves: list[CreditMovement]
) -> None:
    rows = fec_rows(journal(docs, moves))
    assert tuple(rows[0]) == FEC_COLUMNS
    text = fec_text(journal(docs, moves))
    assert all(line.count("|") == 17 for line in text.splitlines())


def test_journal_numbers_entries_per_journal_in_date_order() -> None:
    docs = [
        Document(2, DocumentKind.STATEMENT, "b", "B", date(2026, 3, 2), 100, 0),
        Document(1, DocumentKind.STATEMENT, "a", "A", date(2026, 3, 1), 100, 0),
    ]
    lines = journal(docs)
    assert [(line.entry_number, line.reference) for line in lines] == [
        (1, "F000001"),
        (1, "F000001"),
        (2, "F000002"),
        (2, "F000002"),
    ]
