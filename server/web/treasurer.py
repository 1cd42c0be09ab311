"""The billing pages: the treasurer's periods, statements, exports and totals; the
maker's statements, credits and claims; the manager's decisions on claims.

Like the billing API, they read through the billing repository and change things only by
handing the same commands to the message bus.
"""

from __future__ import annotations

from datetime import UTC, date
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from server.api.deps import RuntimeDep, UowDep
from server.bootstrap import ServerRuntime
from server.domain.billing import ledger
from server.domain.billing.money import BASIS, from_cents, multiplier_bp, to_cents
from server.domain.errors import DomainError
from server.service_layer import billing_commands as bc
from server.service_layer import billing_views as views
from server.service_layer import prepaid
from server.service_layer.unit_of_work import SqlAlchemyUnitOfWork
from server.web import charts
from server.web.error_messages import form_error
from server.web.i18n import N_, tr
from server.web.labels import BILLING
from server.web.session import FormUser, LoggedIn, ManagerUser, TreasurerUser
from server.web.templating import page_context, render

router = APIRouter(include_in_schema=False)

RowId = Annotated[int, Path(ge=1, le=2_147_483_647)]

EXPORTS = (("csv", N_("Statements (CSV)")), ("journal", N_("Accounting journal (CSV)")),
           ("fec", N_("FEC (| separated)")), ("fec-tab", N_("FEC (tab separated)")))  # fmt: skip


def money(request: Request) -> Any:
    """Integer cents written as the locale writes the lab's currency."""
    fmt = page_context(request)["fmt"]
    return lambda cents: fmt.currency(from_cents(cents))


def _render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    full = {"money": money(request), "billing": BILLING, **context}
    return render(request, template, full, status_code)


# -- treasurer: overview, periods -------------------------------------------------------------


def month_rows(uow: SqlAlchemyUnitOfWork, tz: ZoneInfo) -> list[tuple[date, int, int]]:
    """(first day of a month, charges of approved statements of periods starting that month,
    contribution credits earned that month in the lab's time zone), oldest first."""
    rows: dict[date, list[int]] = {}
    for period in uow.billing.periods():
        sums = rows.setdefault(period.starts_on.replace(day=1), [0, 0])
        for s in uow.billing.statements(period_id=period.id, status="approved"):
            sums[0] += s.charges_cents
    for chain in uow.billing.chains().values():
        for entry in chain:
            if entry.kind is ledger.EntryKind.EARN:
                at = entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=UTC)
                month = at.astimezone(tz).date().replace(day=1)
                rows.setdefault(month, [0, 0])[1] += entry.amount_cents
    return [(month, c, k) for month, (c, k) in sorted(rows.items())]


def _overview(request: Request, uow: SqlAlchemyUnitOfWork, **extra: Any) -> dict[str, Any]:
    fmt = page_context(request)["fmt"]
    months = month_rows(uow, fmt.tz)
    chart = charts.paired_bars([(fmt.month(m), c / 100, k / 100) for m, c, k in months], fmt.axis)
    multipliers = uow.billing.multipliers()
    rules = uow.billing.prepaid_rules()
    members = uow.billing.members_in(set(rules))
    return {
        "prepaid_categories": [(c, rules.get(c.id)) for c in uow.categories.all()],
        "prepaid_members": sorted(
            prepaid.statuses(uow, set(members)).values(), key=lambda s: s.member_id
        ),
        "overdrafts": uow.billing.prepaid_overdrafts(),
        "topup_form": {},
        "periods": [
            (p, len(uow.billing.statements(period_id=p.id))) for p in uow.billing.periods()
        ],
        "rates": uow.billing.rates(None),
        "categories": [(c, multipliers.get(c.id)) for c in uow.categories.all()],
        "months": months,
        "chart": chart,
        "tariffs": uow.billing.tariffs(),
        "errors": {},
        "starts_on": "",
        "rate_form": {},
        **extra,
    }


@router.get("/billing", response_class=HTMLResponse)
def billing_page(request: Request, uow: UowDep, user: TreasurerUser) -> HTMLResponse:
    """Periods, rates, category multipliers, and charges vs credits per month."""
    return _render(request, "billing.html", _overview(request, uow))


@router.post("/billing/periods", response_class=HTMLResponse)
def open_period(
    request: Request,
    runtime: RuntimeDep,
    uow: UowDep,
    user: TreasurerUser,
    _: FormUser,
    starts_on: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Open a period from the given day to the end of its month."""
    try:
        first = date.fromisoformat(starts_on)
        period_id = runtime.bus.handle(
            bc.OpenPeriod(first, runtime.settings.billing_policy(), actor=user.principal)
        )
    except (ValueError, DomainError) as exc:
        message = tr(request, "Give the first day as YYYY-MM-DD.") if isinstance(
            exc, ValueError) else form_error(request, exc)  # fmt: skip
        context = _overview(request, uow, errors={"starts_on": message}, starts_on=starts_on)
        return _render(request, "billing.html", context, 400)
    return RedirectResponse(f"/billing/periods/{period_id}", status_code=303)


RATE_FIELDS = ("unlocked_per_hour", "busy_per_hour", "minimum_charge")


def _rate_errors(request: Request, uow: SqlAlchemyUnitOfWork, form: dict[str, str]) -> tuple[
    dict[str, str], dict[str, int]]:  # fmt: skip
    """Errors per field of the new-rate form, and its values (cents, minutes) when valid."""
    errors: dict[str, str] = {}
    values: dict[str, int] = {}
    if form["tariff_id"] not in {t.id for t in uow.billing.tariffs()}:
        errors["tariff_id"] = tr(request, "Choose the tariff.")
    try:
        date.fromisoformat(form["valid_from"])
    except ValueError:
        errors["valid_from"] = tr(request, "Give the first day as YYYY-MM-DD.")
    for name in RATE_FIELDS:
        cents, error = _amount_cents(request, form[name] or "0")
        if error or cents is None:
            errors[name] = error
        else:
            values[name] = cents
    for name, low, high in (("rounding_minutes", 1, 1440), ("free_minutes", 0, 100_000)):
        text = form[name].strip() or ("1" if name == "rounding_minutes" else "0")
        if not text.isdigit() or not low <= int(text) <= high:
            errors[name] = tr(request, "Give a whole number between %(low)s and %(high)s.",
                              low=low, high=high)  # fmt: skip
        else:
            values[name] = int(text)
    return errors, values


@router.post("/billing/rates", response_class=HTMLResponse)
def add_rate(
    request: Request,
    runtime: RuntimeDep,
    uow: UowDep,
    user: TreasurerUser,
    _: FormUser,
    tariff_id: Annotated[str, Form(max_length=63)] = "",
    valid_from: Annotated[str, Form(max_length=10)] = "",
    unlocked_per_hour: Annotated[str, Form(max_length=20)] = "",
    busy_per_hour: Annotated[str, Form(max_length=20)] = "",
    minimum_charge: Annotated[str, Form(max_length=20)] = "",
    rounding_minutes: Annotated[str, Form(max_length=6)] = "",
    free_minutes: Annotated[str, Form(max_length=6)] = "",
) -> Response:
    """A new dated version of a tariff's prices (rates are never edited)."""
    form = {"tariff_id": tariff_id, "valid_from": valid_from,
            "unlocked_per_hour": unlocked_per_hour, "busy_per_hour": busy_per_hour,
            "minimum_charge": minimum_charge, "rounding_minutes": rounding_minutes,
            "free_minutes": free_minutes}  # fmt: skip
    errors, values = _rate_errors(request, uow, form)
    if not errors:
        try:
            runtime.bus.handle(bc.AddRate(
                tariff_id, date.fromisoformat(valid_from), runtime.settings.billing_policy(),
                unlocked_cents_per_hour=values["unlocked_per_hour"],
                busy_cents_per_hour=values["busy_per_hour"],
                minimum_cents=values["minimum_charge"],
                rounding_minutes=values["rounding_minutes"],
                free_minutes=values["free_minutes"], actor=user.principal))  # fmt: skip
            return RedirectResponse("/billing#rates-title", status_code=303)
        except DomainError as exc:
            errors["valid_from"] = form_error(request, exc)
    context = _overview(request, uow, errors=errors, rate_form=form)
    return _render(request, "billing.html", context, 400)


@router.post("/billing/categories/{category_id}", response_class=HTMLResponse)
def set_category_multiplier(
    request: Request,
    category_id: Annotated[str, Path(max_length=40)],
    runtime: RuntimeDep,
    uow: UowDep,
    user: TreasurerUser,
    _: FormUser,
    multiplier: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    """Set a member category's multiplier on general rates (1 = full price)."""
    try:
        basis_points = multiplier_bp(multiplier.strip().replace(",", "."))
        if basis_points > 10 * BASIS:
            raise ValueError(multiplier)
        runtime.bus.handle(
            bc.SetCategoryMultiplier(category_id, basis_points, actor=user.principal)
        )
    except (ArithmeticError, ValueError):
        message = tr(request, "Give a number between 0 and 10, such as 0.5.")
        context = _overview(request, uow, errors={f"multiplier-{category_id}": message})
        return _render(request, "billing.html", context, 400)
    except DomainError as exc:
        errors = {f"multiplier-{category_id}": form_error(request, exc)}
        context = _overview(request, uow, errors=errors)
        return _render(request, "billing.html", context, 400)
    return RedirectResponse("/billing#categories-title", status_code=303)


@router.post("/billing/categories/{category_id}/prepaid", response_class=HTMLResponse)
def set_category_prepaid(
    request: Request,
    category_id: Annotated[str, Path(max_length=40)],
    runtime: RuntimeDep,
    uow: UowDep,
    user: TreasurerUser,
    _: FormUser,
    prepaid_on: Annotated[str, Form(max_length=3)] = "",
    threshold: Annotated[str, Form(max_length=12)] = "0",
    overdraft: Annotated[str, Form(max_length=12)] = "0",
) -> Response:
    """Turn a member category's prepaid option on or off, with its threshold and overdraft."""
    field = f"prepaid-{category_id}"
    threshold_cents, error = _amount_cents(request, threshold or "0")
    overdraft_cents, error2 = _amount_cents(request, overdraft or "0")
    try:
        if threshold_cents is None or overdraft_cents is None:
            raise DomainError(error or error2)
        runtime.bus.handle(bc.SetCategoryPrepaid(
            category_id, prepaid_on == "on", threshold_cents, overdraft_cents,
            actor=user.principal,
        ))  # fmt: skip
    except DomainError as exc:
        context = _overview(request, uow, errors={field: str(exc)})
        return _render(request, "billing.html", context, 400)
    return RedirectResponse("/billing#prepaid-title", status_code=303)


@router.post("/billing/topups", response_class=HTMLResponse)
def record_topup(
    request: Request,
    runtime: RuntimeDep,
    uow: UowDep,
    user: TreasurerUser,
    _: FormUser,
    member_id: Annotated[str, Form(max_length=36)] = "",
    amount: Annotated[str, Form(max_length=12)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Record money a member paid in advance (a `topup` ledger entry)."""
    form = {"member_id": member_id, "amount": amount, "reason": reason}
    cents, _error = _amount_cents(request, amount)
    errors: dict[str, str] = {}
    if not cents:  # None (not an amount) or zero
        errors["amount"] = tr(request, "Give an amount such as 12.50.")
    else:
        topup = bc.AdjustLedger(member_id.strip(), "topup", cents, reason, actor=user.principal)
        try:
            runtime.bus.handle(topup)
        except DomainError as exc:
            errors["member_id"] = str(exc)
    if errors:
        context = _overview(request, uow, errors=errors, topup_form=form)
        return _render(request, "billing.html", context, 400)
    return RedirectResponse("/billing#prepaid-title", status_code=303)


def _period_or_404(uow: SqlAlchemyUnitOfWork, period_id: int) -> Any:
    period = uow.billing.period(period_id)
    if period is None:
        raise HTTPException(404, f"no billing period {period_id}")
    return period


def _period_context(uow: SqlAlchemyUnitOfWork, period_id: int, **extra: Any) -> dict[str, Any]:
    period = _period_or_404(uow, period_id)
    statements = uow.billing.statements(period_id=period_id)
    members = {s.member_id: uow.members.get(s.member_id) for s in statements}
    return {
        "period": period,
        "statements": statements,
        "names": {k: (m.name if m else k) for k, m in members.items()},
        "totals": uow.billing.totals(period_id),
        "charges": sum(s.charges_cents for s in statements),
        "credits": sum(s.credits_applied_cents for s in statements),
        "net": sum(s.net_cents for s in statements),
        "exports": EXPORTS,
        "error": "",
        **extra,
    }


@router.get("/billing/periods/{period_id}", response_class=HTMLResponse)
def period_page(
    request: Request, period_id: RowId, uow: UowDep, user: TreasurerUser
) -> HTMLResponse:
    """A period's statements, its totals per machine, category and contribution type."""
    return _render(request, "billing_period.html", _period_context(uow, period_id))


def _period_action(
    request: Request, runtime: ServerRuntime, uow: SqlAlchemyUnitOfWork, period_id: int,
    command: Any,
) -> Response:  # fmt: skip
    _period_or_404(uow, period_id)
    try:
        runtime.bus.handle(command)
    except DomainError as exc:
        uow.session.expire_all()
        context = _period_context(uow, period_id, error=form_error(request, exc))
        return _render(request, "billing_period.html", context, 400)
    return RedirectResponse(f"/billing/periods/{period_id}", status_code=303)


@router.post("/billing/periods/{period_id}/compute")
def compute_period(
    request: Request, period_id: RowId, runtime: RuntimeDep, uow: UowDep, user: TreasurerUser,
    _: FormUser,
) -> Response:  # fmt: skip
    """Credit what was observed, then (re)compute the period's draft statements."""
    command = bc.ComputePeriod(period_id, runtime.settings.billing_policy(), actor=user.principal)
    return _period_action(request, runtime, uow, period_id, command)


@router.post("/billing/periods/{period_id}/close")
def close_period(
    request: Request, period_id: RowId, runtime: RuntimeDep, uow: UowDep, user: TreasurerUser,
    _: FormUser,
) -> Response:  # fmt: skip
    """Recompute, approve every draft (numbered without gaps) and close the period."""
    command = bc.ClosePeriod(period_id, runtime.settings.billing_policy(), actor=user.principal)
    return _period_action(request, runtime, uow, period_id, command)


@router.get("/billing/periods/{period_id}/export")
def export_period(
    period_id: RowId,
    uow: UowDep,
    runtime: RuntimeDep,
    user: TreasurerUser,
    format: Annotated[Literal["csv", "journal", "fec", "fec-tab"], Query()] = "csv",
) -> PlainTextResponse:
    """The period as a download: statements CSV, accounting journal or FEC."""
    _period_or_404(uow, period_id)
    policy = runtime.settings.billing_policy()
    body, media, name = views.period_export(uow, period_id, policy, format)
    disposition = f'attachment; filename="period-{period_id}-{name}"'
    return PlainTextResponse(body, media_type=media, headers={"Content-Disposition": disposition})


# -- maker: statements, credits, claims ---------------------------------------------------------


@router.get("/me/statements", response_class=HTMLResponse)
def my_statements(request: Request, uow: UowDep, user: LoggedIn) -> HTMLResponse:
    """My approved statements and credit notes."""
    found = uow.billing.statements(member_id=user.member_id, status="approved")
    return _render(request, "my_statements.html", {"statements": found})


def _statement_context(
    uow: SqlAlchemyUnitOfWork, statement_id: int, *, treasurer: bool, **extra: Any
) -> dict[str, Any]:
    view = views.statement_view(uow, statement_id)
    return {"view": view, "treasurer": treasurer, "errors": {}, "form": {}, **extra}


@router.get("/me/statements/{statement_id}", response_class=HTMLResponse)
def my_statement(
    request: Request, statement_id: RowId, uow: UowDep, user: LoggedIn
) -> HTMLResponse:
    """One of my approved statements with its lines (another's is not found)."""
    statement = uow.billing.statement(statement_id)
    if (
        statement is None
        or statement.member_id != user.member_id
        or (statement.status != "approved")
    ):
        raise HTTPException(404, f"no statement {statement_id}")
    context = _statement_context(uow, statement_id, treasurer=False)
    return _render(request, "statement.html", context)


def _statement_or_404(uow: SqlAlchemyUnitOfWork, statement_id: int) -> Any:
    statement = uow.billing.statement(statement_id)
    if statement is None:
        raise HTTPException(404, f"no statement {statement_id}")
    return statement


@router.get("/billing/statements/{statement_id}", response_class=HTMLResponse)
def statement_page(
    request: Request, statement_id: RowId, uow: UowDep, user: TreasurerUser
) -> HTMLResponse:
    """A statement to review: adjust a line or approve a draft, credit an approved one."""
    _statement_or_404(uow, statement_id)
    context = _statement_context(uow, statement_id, treasurer=True)
    return _render(request, "statement.html", context)


def _statement_action(
    request: Request, runtime: ServerRuntime, uow: SqlAlchemyUnitOfWork, statement_id: int,
    command: Any, field: str, form: dict[str, str],
) -> Response:  # fmt: skip
    try:
        result = runtime.bus.handle(command)
    except DomainError as exc:
        uow.session.expire_all()
        errors = {field: form_error(request, exc)}
        context = _statement_context(uow, statement_id, treasurer=True, errors=errors, form=form)
        return _render(request, "statement.html", context, 400)
    uow.session.expire_all()
    target = result if isinstance(result, int) and field == "note_amount" else statement_id
    statement = uow.billing.statement(statement_id)
    if statement is None:  # an adjusted draft is recomputed under a new id
        return RedirectResponse(f"/billing/periods/{form['period_id']}", status_code=303)
    return RedirectResponse(f"/billing/statements/{target}", status_code=303)


@router.post("/billing/statements/{statement_id}/approve")
def approve_statement(
    request: Request, statement_id: RowId, runtime: RuntimeDep, uow: UowDep,
    user: TreasurerUser, _: FormUser,
) -> Response:  # fmt: skip
    """Apply the credits, number the statement and make it immutable."""
    statement = _statement_or_404(uow, statement_id)
    command = bc.ApproveStatement(
        statement_id, runtime.settings.billing_policy(), actor=user.principal
    )
    form = {"period_id": str(statement.period_id)}
    return _statement_action(request, runtime, uow, statement_id, command, "approve", form)


def _amount_cents(request: Request, text: str) -> tuple[int | None, str]:
    try:
        amount = Decimal(text.strip().replace(",", "."))
    except InvalidOperation:
        return None, tr(request, "Give an amount such as 12.50.")
    if not amount.is_finite() or amount < 0 or amount >= 10_000_000:
        return None, tr(request, "Give an amount such as 12.50.")
    return to_cents(amount), ""


@router.post("/billing/statements/{statement_id}/adjust", response_class=HTMLResponse)
def adjust_line(
    request: Request,
    statement_id: RowId,
    runtime: RuntimeDep,
    uow: UowDep,
    user: TreasurerUser,
    _: FormUser,
    session_id: Annotated[str, Form(max_length=100)] = "",
    amount: Annotated[str, Form(max_length=20)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Set one line's amount with a reason; the period's drafts are recomputed."""
    statement = _statement_or_404(uow, statement_id)
    form = {"session_id": session_id, "amount": amount, "reason": reason,
            "period_id": str(statement.period_id)}  # fmt: skip
    cents, error = _amount_cents(request, amount)
    errors = {"amount": error} if error else {}
    if not reason.strip():
        errors["reason"] = tr(request, "Give the reason of the change.")
    if errors or cents is None:
        context = _statement_context(uow, statement_id, treasurer=True, errors=errors, form=form)
        return _render(request, "statement.html", context, 400)
    command = bc.AdjustLine(statement_id, session_id, cents, reason.strip(),
                            runtime.settings.billing_policy(), actor=user.principal)  # fmt: skip
    return _statement_action(request, runtime, uow, statement_id, command, "amount", form)


@router.post("/billing/statements/{statement_id}/credit-note", response_class=HTMLResponse)
def issue_credit_note(
    request: Request,
    statement_id: RowId,
    runtime: RuntimeDep,
    uow: UowDep,
    user: TreasurerUser,
    _: FormUser,
    note_amount: Annotated[str, Form(max_length=20)] = "",
    note_reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Correct an approved statement with a new, numbered credit note."""
    statement = _statement_or_404(uow, statement_id)
    form = {"note_amount": note_amount, "note_reason": note_reason,
            "period_id": str(statement.period_id)}  # fmt: skip
    cents, error = _amount_cents(request, note_amount)
    errors = {"note_amount": error} if error else {}
    if not note_reason.strip():
        errors["note_reason"] = tr(request, "Give the reason of the change.")
    if errors or cents is None:
        context = _statement_context(uow, statement_id, treasurer=True, errors=errors, form=form)
        return _render(request, "statement.html", context, 400)
    policy = runtime.settings.billing_policy()
    command = bc.IssueCreditNote(
        statement_id, cents, note_reason.strip(), policy, actor=user.principal
    )
    return _statement_action(request, runtime, uow, statement_id, command, "note_amount", form)


@router.get("/me/credits", response_class=HTMLResponse)
def my_credits(request: Request, uow: UowDep, user: LoggedIn) -> HTMLResponse:
    """My credits balance and the ledger behind it."""
    chain = uow.billing.chain(user.member_id)
    context = {"entries": list(reversed(chain)), "balance": ledger.balance(chain),
               "summary": uow.billing.balance(user.member_id),
               "prepaid": prepaid.statuses(uow, {user.member_id}).get(user.member_id)}  # fmt: skip
    return _render(request, "my_credits.html", context)


def _claims_context(uow: SqlAlchemyUnitOfWork, user: LoggedIn, **extra: Any) -> dict[str, Any]:
    types = [t for t in uow.billing.contribution_types() if t.active and not t.automatic_source]
    return {"claims": uow.billing.claims(member_id=user.member_id), "types": types,
            "errors": {}, "form": {}, **extra}  # fmt: skip


@router.get("/me/claims", response_class=HTMLResponse)
def my_claims(request: Request, uow: UowDep, user: LoggedIn) -> HTMLResponse:
    return _render(request, "my_claims.html", _claims_context(uow, user))


@router.post("/me/claims", response_class=HTMLResponse)
def submit_claim(
    request: Request,
    runtime: RuntimeDep,
    uow: UowDep,
    user: FormUser,
    contribution_type_id: Annotated[str, Form(max_length=63)] = "",
    quantity: Annotated[str, Form(max_length=6)] = "",
    description: Annotated[str, Form(max_length=2000)] = "",
    link: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Claim a contribution; a manager approves or rejects it."""
    form = {"contribution_type_id": contribution_type_id, "quantity": quantity,
            "description": description, "link": link}  # fmt: skip
    errors = _claim_errors(request, uow, form)
    if not errors:
        try:
            runtime.bus.handle(bc.SubmitClaim(
                user.member_id, contribution_type_id, int(quantity), description.strip(),
                link.strip() or None, actor=user.principal))  # fmt: skip
            return RedirectResponse("/me/claims", status_code=303)
        except DomainError as exc:
            errors["contribution_type_id"] = form_error(request, exc)
    context = _claims_context(uow, user, errors=errors, form=form)
    return _render(request, "my_claims.html", context, 400)


def _claim_errors(
    request: Request, uow: SqlAlchemyUnitOfWork, form: dict[str, str]
) -> dict[str, str]:
    errors = {}
    if uow.billing.contribution_type(form["contribution_type_id"]) is None:
        errors["contribution_type_id"] = tr(request, "Choose the kind of contribution.")
    if not form["quantity"].isdigit() or not 0 < int(form["quantity"]) <= 100_000:
        errors["quantity"] = tr(request, "Give a whole number between 1 and 100000.")
    if not form["description"].strip():
        errors["description"] = tr(request, "Describe the contribution.")
    return errors


# -- manager: decisions on claims ----------------------------------------------------------------


def _decisions_context(uow: SqlAlchemyUnitOfWork, **extra: Any) -> dict[str, Any]:
    claims = uow.billing.claims()
    members = {c.member_id for c in claims}
    names = {m: (found.name if (found := uow.members.get(m)) else m) for m in members}
    types = {t.id: t.name for t in uow.billing.contribution_types()}
    return {"claims": claims, "names": names, "types": types, "errors": {}, **extra}


@router.get("/claims", response_class=HTMLResponse)
def claims_page(request: Request, uow: UowDep, user: ManagerUser) -> HTMLResponse:
    """Every claim, pending ones first to decide."""
    return _render(request, "claims.html", _decisions_context(uow))


@router.post("/claims/{claim_id}/decision", response_class=HTMLResponse)
def decide_claim(
    request: Request,
    claim_id: RowId,
    runtime: RuntimeDep,
    uow: UowDep,
    user: ManagerUser,
    _: FormUser,
    decision: Annotated[Literal["approve", "reject"], Form()],
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Approve (credits the member's ledger) or reject a claim, with a reason."""
    if uow.billing.claim(claim_id) is None:
        raise HTTPException(404, f"no claim {claim_id}")
    error = "" if reason.strip() else tr(request, "Give the reason of the decision.")
    if not error:
        try:
            runtime.bus.handle(bc.DecideClaim(
                claim_id, decision == "approve", reason.strip(),
                runtime.settings.billing_policy(), actor=user.principal))  # fmt: skip
            return RedirectResponse("/claims", status_code=303)
        except DomainError as exc:
            error = form_error(request, exc)
    uow.session.expire_all()
    context = _decisions_context(uow, errors={claim_id: error})
    return _render(request, "claims.html", context, 400)
