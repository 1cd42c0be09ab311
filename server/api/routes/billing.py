"""Billing: tariffs, rates, category multipliers, periods, statements and exports.

Treasurer: all money. A maker sees only their own statements.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.templating import Jinja2Templates

from dashboards import STATIC_DIR, TEMPLATES_DIR
from server.adapters.orm_billing import BillingLine, BillingRate, BillingStatement
from server.adapters.pdf import PdfUnavailableError, html_to_pdf
from server.api.billing_schemas import (
    CategoryPricingPublic,
    CategoryPricingUpdate,
    CreditNoteCreate,
    LineAdjust,
    LinePublic,
    PeriodCreate,
    PeriodPublic,
    PeriodTotals,
    RateCreate,
    RatePublic,
    StatementPublic,
    TariffCreate,
    TariffPublic,
    TariffUpdate,
    TotalRow,
)
from server.api.deps import CurrentPrincipal, RuntimeDep, UowDep, require
from server.api.schemas import _PRINTABLE, SLUG
from server.domain.access import Principal, Role
from server.domain.billing.money import BASIS, from_cents, multiplier_bp, to_cents
from server.service_layer import billing_commands as bc
from server.service_layer import billing_views as views
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork

router = APIRouter(prefix="/api/billing", tags=["billing"])
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))

TreasurerPrincipal = Annotated[Principal, Depends(require(Role.TREASURER))]
TariffId = Annotated[str, Path(pattern=SLUG)]
CategoryId = Annotated[str, Path(min_length=1, max_length=40, pattern=_PRINTABLE)]
MemberFilter = Annotated[str | None, Query(min_length=1, max_length=36, pattern=_PRINTABLE)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such object"}}
RowId = Annotated[int, Path(ge=1, le=2_147_483_647)]


# -- tariffs, rates, categories ----------------------------------------------------------------


def _tariffs(uow: SqlAlchemyUnitOfWork) -> list[TariffPublic]:
    machines = uow.billing.tariff_machines()
    return [
        TariffPublic(
            id=t.id,
            name=t.name,
            machine_ids=sorted(m for m, tid in machines.items() if tid == t.id),
        )
        for t in uow.billing.tariffs()
    ]


@router.get("/tariffs", response_model=list[TariffPublic])
def list_tariffs(uow: UowDep, _: TreasurerPrincipal) -> list[TariffPublic]:
    return _tariffs(uow)


@router.post("/tariffs", response_model=TariffPublic, status_code=201)
def create_tariff(
    body: TariffCreate, runtime: RuntimeDep, uow: UowDep, principal: TreasurerPrincipal
) -> TariffPublic:
    """Machines priced alike; a machine belongs to at most one tariff (the last given)."""
    runtime.bus.handle(bc.AddTariff(body.id, body.name, tuple(body.machine_ids), actor=principal))
    return next(t for t in _tariffs(uow) if t.id == body.id)


@router.patch("/tariffs/{tariff_id}", response_model=TariffPublic, responses=NOT_FOUND)
def update_tariff(
    tariff_id: TariffId,
    body: TariffUpdate,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: TreasurerPrincipal,
) -> TariffPublic:
    machines = tuple(body.machine_ids) if body.machine_ids is not None else None
    runtime.bus.handle(bc.UpdateTariff(tariff_id, body.name, machines, actor=principal))
    uow.session.expire_all()
    return next(t for t in _tariffs(uow) if t.id == tariff_id)


def rate_public(rate: BillingRate, currency: str) -> RatePublic:
    return RatePublic(
        id=rate.id,
        tariff_id=rate.tariff_id,
        valid_from=rate.valid_from,
        category_id=rate.category_id,
        unlocked_per_hour=from_cents(rate.unlocked_cents_per_hour),
        busy_per_hour=from_cents(rate.busy_cents_per_hour),
        minimum_charge=from_cents(rate.minimum_cents),
        rounding_minutes=rate.rounding_minutes,
        free_minutes=rate.free_minutes,
        currency=currency,
    )


@router.get("/rates", response_model=list[RatePublic])
def list_rates(
    uow: UowDep,
    runtime: RuntimeDep,
    _: TreasurerPrincipal,
    tariff: Annotated[str | None, Query(pattern=SLUG)] = None,
) -> list[RatePublic]:
    return [rate_public(r, runtime.settings.currency) for r in uow.billing.rates(tariff)]


@router.post("/rates", response_model=RatePublic, status_code=201)
def create_rate(
    body: RateCreate, runtime: RuntimeDep, uow: UowDep, principal: TreasurerPrincipal
) -> RatePublic:
    """A new version of a tariff's prices from `valid_from` (the lab's calendar day);
    sessions that started earlier keep the previous version."""
    rate_id = runtime.bus.handle(
        bc.AddRate(
            body.tariff_id,
            body.valid_from,
            runtime.settings.billing_policy(),
            unlocked_cents_per_hour=to_cents(body.unlocked_per_hour),
            busy_cents_per_hour=to_cents(body.busy_per_hour),
            minimum_cents=to_cents(body.minimum_charge),
            rounding_minutes=body.rounding_minutes,
            free_minutes=body.free_minutes,
            category_id=body.category_id,
            actor=principal,
        )
    )
    rate = uow.billing.rate(rate_id)
    assert rate is not None
    return rate_public(rate, runtime.settings.currency)


def _categories(uow: SqlAlchemyUnitOfWork) -> list[CategoryPricingPublic]:
    multipliers = uow.billing.multipliers()
    return [
        CategoryPricingPublic(
            category_id=c.id, name=c.name, multiplier=from_bp(multipliers.get(c.id, BASIS))
        )
        for c in uow.categories.all()
    ]


def from_bp(bp: int) -> Decimal:
    return (Decimal(bp) / BASIS).quantize(Decimal("0.0001"))


@router.get("/categories", response_model=list[CategoryPricingPublic])
def list_category_pricing(uow: UowDep, _: TreasurerPrincipal) -> list[CategoryPricingPublic]:
    """Each member category's multiplier on general rates (1 = full price)."""
    return _categories(uow)


@router.put("/categories/{category_id}", response_model=CategoryPricingPublic, responses=NOT_FOUND)
def set_category_pricing(
    category_id: CategoryId,
    body: CategoryPricingUpdate,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: TreasurerPrincipal,
) -> CategoryPricingPublic:
    runtime.bus.handle(
        bc.SetCategoryMultiplier(category_id, multiplier_bp(body.multiplier), actor=principal)
    )
    uow.session.expire_all()
    return next(c for c in _categories(uow) if c.category_id == category_id)


# -- periods ----------------------------------------------------------------------------------


def _period_public(uow: SqlAlchemyUnitOfWork, period_id: int) -> PeriodPublic:
    period = uow.billing.period(period_id)
    if period is None:
        raise HTTPException(404, f"no billing period {period_id}")
    return PeriodPublic(
        id=period.id,
        starts_on=period.starts_on,
        ends_on=period.ends_on,
        status=period.status,
        computed_at=period.computed_at,
        closed_at=period.closed_at,
        statements=len(uow.billing.statements(period_id=period.id)),
    )


@router.get("/periods", response_model=list[PeriodPublic])
def list_periods(uow: UowDep, _: TreasurerPrincipal) -> list[PeriodPublic]:
    return [_period_public(uow, p.id) for p in uow.billing.periods()]


@router.post("/periods", response_model=PeriodPublic, status_code=201)
def open_period(
    body: PeriodCreate, runtime: RuntimeDep, uow: UowDep, principal: TreasurerPrincipal
) -> PeriodPublic:
    policy = runtime.settings.billing_policy()
    period_id = runtime.bus.handle(
        bc.OpenPeriod(body.starts_on, policy, ends_on=body.ends_on, actor=principal)
    )
    return _period_public(uow, period_id)


@router.get("/periods/{period_id}", response_model=PeriodPublic, responses=NOT_FOUND)
def get_period(period_id: RowId, uow: UowDep, _: TreasurerPrincipal) -> PeriodPublic:
    return _period_public(uow, period_id)


@router.post("/periods/{period_id}/compute", response_model=PeriodPublic, responses=NOT_FOUND)
def compute_period(
    period_id: RowId, runtime: RuntimeDep, uow: UowDep, principal: TreasurerPrincipal
) -> PeriodPublic:
    """Credit what was observed, then (re)compute every draft statement of the period."""
    policy = runtime.settings.billing_policy()
    runtime.bus.handle(bc.ComputePeriod(period_id, policy, actor=principal))
    uow.session.expire_all()
    return _period_public(uow, period_id)


@router.post("/periods/{period_id}/close", response_model=PeriodPublic, responses=NOT_FOUND)
def close_period(
    period_id: RowId, runtime: RuntimeDep, uow: UowDep, principal: TreasurerPrincipal
) -> PeriodPublic:
    """Recompute, approve every draft (numbered without gaps) and close the period."""
    policy = runtime.settings.billing_policy()
    runtime.bus.handle(bc.ClosePeriod(period_id, policy, actor=principal))
    uow.session.expire_all()
    return _period_public(uow, period_id)


def _rows(rows: list[tuple[str, int, int]]) -> list[TotalRow]:
    return [TotalRow(key=k, count=n, amount=from_cents(c)) for k, n, c in rows]


@router.get("/periods/{period_id}/totals", response_model=PeriodTotals, responses=NOT_FOUND)
def period_totals(
    period_id: RowId, uow: UowDep, runtime: RuntimeDep, _: TreasurerPrincipal
) -> PeriodTotals:
    """Totals of the period per machine, per member category and per contribution type."""
    _period_public(uow, period_id)
    statements = uow.billing.statements(period_id=period_id)
    totals = uow.billing.totals(period_id)
    return PeriodTotals(
        period_id=period_id,
        currency=runtime.settings.currency,
        charges=from_cents(sum(s.charges_cents for s in statements)),
        credits_applied=from_cents(sum(s.credits_applied_cents for s in statements)),
        net_due=from_cents(sum(s.net_cents for s in statements)),
        by_machine=_rows(totals["machine"]),
        by_category=_rows(totals["category"]),
        by_contribution_type=_rows(totals["contribution_type"]),
    )


@router.get("/periods/{period_id}/export", response_class=PlainTextResponse, responses=NOT_FOUND)
def export_period(
    period_id: RowId,
    uow: UowDep,
    runtime: RuntimeDep,
    _: TreasurerPrincipal,
    format: Annotated[Literal["csv", "journal", "fec", "fec-tab"], Query()] = "csv",
) -> PlainTextResponse:
    """`csv`: statement lines and totals; `journal`: the accounting journal as CSV;
    `fec` / `fec-tab`: the French FEC (18 columns, `|` or tab separated)."""
    _period_public(uow, period_id)
    policy = runtime.settings.billing_policy()
    body, media, name = views.period_export(uow, period_id, policy, format)
    return PlainTextResponse(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="period-{period_id}-{name}"'},
    )


# -- statements ---------------------------------------------------------------------------------


def _visible(
    uow: SqlAlchemyUnitOfWork, statement_id: int, principal: Principal
) -> BillingStatement:
    statement = uow.billing.statement(statement_id)
    if statement is None or (
        statement.member_id != principal.member_id and not principal.has(Role.TREASURER)
    ):
        raise HTTPException(404, f"no statement {statement_id}")
    return statement


def line_public(line: BillingLine) -> LinePublic:
    return LinePublic(
        session_id=line.session_id,
        machine_id=line.machine_id,
        started_at=line.started_at,
        ended_at=line.ended_at,
        metered_seconds=line.metered_seconds,
        billed_minutes=line.billed_minutes,
        busy_billed_minutes=line.busy_billed_minutes,
        free_minutes=line.free_minutes,
        rate_id=line.rate_id,
        multiplier=from_bp(line.multiplier_bp),
        amount=from_cents(line.amount_cents),
        computed_amount=from_cents(line.computed_cents),
        adjustment_reason=line.adjustment_reason,
        late=line.late,
    )


def statement_public(
    uow: SqlAlchemyUnitOfWork, statement: BillingStatement, *, with_lines: bool
) -> StatementPublic:
    view = views.statement_view(uow, statement.id)
    return StatementPublic(
        id=statement.id,
        reference=view.reference,
        period_id=statement.period_id,
        member_id=statement.member_id,
        kind=statement.kind,
        status=statement.status,
        number=statement.number,
        charges=from_cents(statement.charges_cents),
        credits_applied=from_cents(statement.credits_applied_cents),
        net_due=from_cents(statement.net_cents),
        currency=statement.currency,
        refers_to_id=statement.refers_to_id,
        reason=statement.reason,
        approved_at=statement.approved_at,
        lines=[line_public(x) for x in view.lines] if with_lines else None,
    )


@router.get("/statements", response_model=list[StatementPublic])
def list_statements(
    uow: UowDep,
    principal: CurrentPrincipal,
    period_id: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    member_id: MemberFilter = None,
    status: Literal["draft", "approved"] | None = None,
) -> list[StatementPublic]:
    """Treasurers see every statement; anyone else only their own approved ones."""
    if not principal.has(Role.TREASURER):
        member_id, status = principal.member_id, "approved"
    found = uow.billing.statements(period_id=period_id, member_id=member_id, status=status)
    return [statement_public(uow, s, with_lines=False) for s in found]


@router.get("/statements/{statement_id}", response_model=StatementPublic, responses=NOT_FOUND)
def get_statement(statement_id: RowId, uow: UowDep, principal: CurrentPrincipal) -> StatementPublic:
    statement = _visible(uow, statement_id, principal)
    if statement.status != "approved" and not principal.has(Role.TREASURER):
        raise HTTPException(404, f"no statement {statement_id}")
    return statement_public(uow, statement, with_lines=True)


LABELS = {
    "en": {
        "statement": "Statement",
        "credit_note": "Credit note",
        "draft": "DRAFT",
        "period": "Period",
        "member": "Member",
        "machine": "Machine",
        "start": "Start",
        "end": "End",
        "minutes": "Billed min",
        "free": "Free min",
        "amount": "Amount",
        "charges": "Charges",
        "credits": "Credits applied",
        "net": "Net due",
        "late": "late session of a closed period",
        "refers": "Corrects",
        "reason": "Reason",
        "adjusted": "adjusted",
    },
    "fr": {
        "statement": "Relevé",
        "credit_note": "Avoir",
        "draft": "BROUILLON",
        "period": "Période",
        "member": "Membre",
        "machine": "Machine",
        "start": "Début",
        "end": "Fin",
        "minutes": "Min facturées",
        "free": "Min offertes",
        "amount": "Montant",
        "charges": "Total",
        "credits": "Crédits appliqués",
        "net": "Net à payer",
        "late": "session tardive d'une période close",
        "refers": "Corrige",
        "reason": "Motif",
        "adjusted": "ajusté",
    },
}


def _printable(
    uow: SqlAlchemyUnitOfWork, statement_id: int, principal: Principal
) -> BillingStatement:
    """A statement its member may print once approved, and a treasurer at any time."""
    statement = _visible(uow, statement_id, principal)
    if statement.status != "approved" and not principal.has(Role.TREASURER):
        raise HTTPException(404, f"no statement {statement_id}")
    return statement


def _statement_document(
    uow: SqlAlchemyUnitOfWork, runtime: Any, statement: BillingStatement, lang: str
) -> tuple[str, str]:
    """The printable page of a statement, and its reference (F000001, AV000002…)."""
    view = views.statement_view(uow, statement.id)
    policy = runtime.settings.billing_policy()
    sep = "," if lang == "fr" else "."

    def money(cents: int) -> str:
        return f"{from_cents(cents):.2f}".replace(".", sep) + f" {statement.currency}"

    def local(instant: Any) -> str:
        return str(instant.astimezone(policy.tz).strftime("%Y-%m-%d %H:%M"))

    html = templates.get_template("billing_statement.html").render(
        view=view,
        t=LABELS[lang],
        lang=lang,
        money=money,
        local=local,
        site=runtime.settings.site,
    )
    return html, view.reference


@router.get("/statements/{statement_id}/html", response_class=HTMLResponse, responses=NOT_FOUND)
def statement_html(
    statement_id: RowId,
    uow: UowDep,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    lang: Literal["en", "fr"] = "en",
) -> HTMLResponse:
    """The statement as a printable page."""
    statement = _printable(uow, statement_id, principal)
    html, _ = _statement_document(uow, runtime, statement, lang)
    return HTMLResponse(html)


PDF_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The statement as a PDF document",
        "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
    },
    **NOT_FOUND,
    503: {"description": "PDF rendering (WeasyPrint, pango) is not installed on the server"},
}


@router.get("/statements/{statement_id}/pdf", response_class=Response, responses=PDF_RESPONSES)
def statement_pdf(
    statement_id: RowId,
    uow: UowDep,
    runtime: RuntimeDep,
    principal: CurrentPrincipal,
    lang: Literal["en", "fr"] = "en",
) -> Response:
    """The printable page as a PDF document (laid out by WeasyPrint on the server)."""
    statement = _printable(uow, statement_id, principal)
    html, reference = _statement_document(uow, runtime, statement, lang)
    try:
        pdf = html_to_pdf(html, stylesheets=[STATIC_DIR / "statement.css"])
    except PdfUnavailableError as exc:
        raise HTTPException(503, str(exc)) from exc
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            "Cache-Control": "no-store",
            "Content-Disposition": f'attachment; filename="{reference}.pdf"',
        },
    )


@router.post(
    "/statements/{statement_id}/adjust", response_model=StatementPublic, responses=NOT_FOUND
)
def adjust_line(
    statement_id: RowId,
    body: LineAdjust,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: TreasurerPrincipal,
) -> StatementPublic:
    """Set one line's amount with a reason, then recompute the period's drafts (the
    statement keeps its member and period, and gets a new id)."""
    statement = _visible(uow, statement_id, principal)
    member_id, period_id = statement.member_id, statement.period_id
    runtime.bus.handle(
        bc.AdjustLine(
            statement_id,
            body.session_id,
            to_cents(body.amount),
            body.reason,
            runtime.settings.billing_policy(),
            actor=principal,
        )
    )
    uow.session.expire_all()
    drafts = uow.billing.statements(period_id=period_id, member_id=member_id, status="draft")
    return statement_public(uow, drafts[-1], with_lines=True)


@router.post(
    "/statements/{statement_id}/approve", response_model=StatementPublic, responses=NOT_FOUND
)
def approve_statement(
    statement_id: RowId, runtime: RuntimeDep, uow: UowDep, principal: TreasurerPrincipal
) -> StatementPublic:
    """Apply the credits, number the statement and make it immutable."""
    _visible(uow, statement_id, principal)
    policy = runtime.settings.billing_policy()
    runtime.bus.handle(bc.ApproveStatement(statement_id, policy, actor=principal))
    uow.session.expire_all()
    return statement_public(uow, _visible(uow, statement_id, principal), with_lines=True)


@router.post(
    "/statements/{statement_id}/credit-notes",
    response_model=StatementPublic,
    status_code=201,
    responses=NOT_FOUND,
)
def issue_credit_note(
    statement_id: RowId,
    body: CreditNoteCreate,
    runtime: RuntimeDep,
    uow: UowDep,
    principal: TreasurerPrincipal,
) -> StatementPublic:
    """Correct an approved statement: a new, numbered credit note referencing it."""
    _visible(uow, statement_id, principal)
    note_id = runtime.bus.handle(
        bc.IssueCreditNote(
            statement_id,
            to_cents(body.amount),
            body.reason,
            runtime.settings.billing_policy(),
            actor=principal,
        )
    )
    return statement_public(uow, _visible(uow, note_id, principal), with_lines=False)
