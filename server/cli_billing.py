"""`fablab billing …`: prices, periods, statements, credits and exports from a shell.

Runs as the shell administrator (no actor), over FABLAB_DATABASE_URL, with the billing
rules of the settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

import typer

from server.config import Settings

billing_app = typer.Typer(help="Usage billing and contribution credits.", no_args_is_help=True)


@contextmanager
def _runtime() -> Iterator[Any]:
    from server.bootstrap import ServerRuntime

    runtime = ServerRuntime(Settings(), mqtt_enabled=False)
    try:
        yield runtime
    finally:
        runtime.engine.dispose()


def _handle(cmd: object) -> Any:
    from server.cli import _call

    with _runtime() as runtime:
        return _call(lambda: runtime.bus.handle(cmd))


def _handle_and_send(cmd: object) -> Any:
    """Handle a command whose change reaches the controllers (a prepaid member's
    snapshot): the configs it changed are sent in one short broker connection."""
    from server.cli import _admin_bus, _call

    with _admin_bus() as bus:
        return _call(lambda: bus.handle(cmd))


def _cents(amount: str) -> int:
    from server.domain.billing.money import to_cents

    try:
        return to_cents(amount)
    except ValueError as exc:
        from server.cli import _fail

        _fail(str(exc))


def _policy() -> Any:
    return Settings().billing_policy()


@billing_app.command("tariff-add")
def tariff_add(
    tariff_id: str,
    name: str,
    machine: Annotated[list[str] | None, typer.Option(help="A machine it prices (repeat).")] = None,
) -> None:
    """Add a tariff: machines priced alike."""
    from server.service_layer import billing_commands as bc

    _handle(bc.AddTariff(tariff_id, name, tuple(machine or ())))
    typer.echo(f"tariff {tariff_id} added")


@billing_app.command("rate-add")
def rate_add(
    tariff_id: str,
    valid_from: Annotated[str, typer.Argument(help="First day (YYYY-MM-DD, lab calendar).")],
    unlocked: Annotated[str, typer.Option(help="Price per hour unlocked.")] = "0",
    busy: Annotated[str, typer.Option(help="Price per hour busy.")] = "0",
    minimum: Annotated[str, typer.Option(help="Minimum charge per session.")] = "0",
    rounding: Annotated[int, typer.Option(help="Billed per started step of minutes.")] = 1,
    free: Annotated[int, typer.Option(help="Free unlocked minutes per member and period.")] = 0,
    category: Annotated[str | None, typer.Option(help="Only for this member category.")] = None,
) -> None:
    """Add a dated version of a tariff's prices (rates are never edited)."""
    from server.service_layer import billing_commands as bc

    rate_id = _handle(
        bc.AddRate(
            tariff_id,
            date.fromisoformat(valid_from),
            _policy(),
            _cents(unlocked),
            _cents(busy),
            _cents(minimum),
            rounding,
            free,
            category,
        )
    )
    typer.echo(f"rate {rate_id} added")


@billing_app.command("multiplier")
def multiplier(category: str, value: str) -> None:
    """Set a member category's multiplier on general rates (e.g. 0.5)."""
    from server.domain.billing.money import multiplier_bp
    from server.service_layer import billing_commands as bc

    _handle(bc.SetCategoryMultiplier(category, multiplier_bp(Decimal(value))))
    typer.echo(f"{category}: x{value}")


@billing_app.command("contribution-type-add")
def contribution_type_add(
    type_id: str,
    name: str,
    unit: Annotated[str, typer.Option(help="hour or item")] = "hour",
    kind: Annotated[str, typer.Option(help="money or minutes")] = "money",
    value: Annotated[str, typer.Option(help="Money per unit, or machine minutes.")] = "0",
    automatic: Annotated[
        str | None, typer.Option(help="supervision, training or maintenance")
    ] = None,
) -> None:
    """Add a contribution type and what it is worth."""
    from server.service_layer import billing_commands as bc

    worth = _cents(value) if kind == "money" else int(value)
    _handle(bc.AddContributionType(type_id, name, unit, kind, worth, automatic))
    typer.echo(f"contribution type {type_id} added")


@billing_app.command("period-open")
def period_open(
    starts_on: str, ends_on: Annotated[str | None, typer.Option(help="Default: month end.")] = None
) -> None:
    """Open a billing period (default: the calendar month)."""
    from server.service_layer import billing_commands as bc

    end = date.fromisoformat(ends_on) if ends_on else None
    period_id = _handle(bc.OpenPeriod(date.fromisoformat(starts_on), _policy(), ends_on=end))
    typer.echo(f"period {period_id} opened")


@billing_app.command("period-compute")
def period_compute(period_id: int) -> None:
    """Sweep credits and (re)compute the period's draft statements."""
    from server.service_layer import billing_commands as bc

    count = _handle(bc.ComputePeriod(period_id, _policy()))
    typer.echo(f"{count} draft statements")


@billing_app.command("period-close")
def period_close(period_id: int) -> None:
    """Recompute, approve every draft statement and close the period."""
    from server.service_layer import billing_commands as bc

    count = _handle(bc.ClosePeriod(period_id, _policy()))
    typer.echo(f"period {period_id} closed, {count} statements approved")


@billing_app.command("statements")
def statements(period_id: int) -> None:
    """List the period's statements: number, member, charges, credits, net due."""
    from server.domain.billing.money import format_amount

    with _runtime() as runtime, runtime.new_uow() as uow:
        for s in uow.billing.statements(period_id=period_id):
            number = s.number if s.number is not None else "draft"
            typer.echo(
                f"{s.id}\t{number}\t{s.kind}\t{s.status}\t{s.member_id}\t"
                f"{format_amount(s.charges_cents)}\t{format_amount(s.credits_applied_cents)}\t"
                f"{format_amount(s.net_cents)} {s.currency}"
            )


@billing_app.command("approve")
def approve(statement_id: int) -> None:
    """Approve a draft statement: numbered, credits spent, immutable."""
    from server.service_layer import billing_commands as bc

    number = _handle(bc.ApproveStatement(statement_id, _policy()))
    typer.echo(f"statement {statement_id} approved as number {number}")


@billing_app.command("credit-note")
def credit_note(statement_id: int, amount: str, reason: str) -> None:
    """Correct an approved statement with a numbered credit note."""
    from server.service_layer import billing_commands as bc

    note = _handle(bc.IssueCreditNote(statement_id, _cents(amount), reason, _policy()))
    typer.echo(f"credit note {note} issued")


@billing_app.command("statement")
def statement_show(statement_id: int) -> None:
    """Print a statement: its reference, totals and every line (session, machine, times,
    billed minutes, amount, adjustment)."""
    from server.cli import _call
    from server.domain.billing.money import format_amount
    from server.service_layer import billing_views as views

    policy = _policy()
    with _runtime() as runtime, runtime.new_uow() as uow:
        view = _call(lambda: views.statement_view(uow, statement_id))
        s = view.statement
        typer.echo(f"{view.reference}\t{s.status}\t{s.member_id}\t{view.member_name}")
        for line in view.lines:
            start = line.started_at.astimezone(policy.tz)
            mark = " (late)" if line.late else ""
            reason = f"\tadjusted: {line.adjustment_reason}" if line.adjustment_reason else ""
            typer.echo(
                f"{line.session_id}\t{line.machine_id}\t{start:%Y-%m-%d %H:%M}\t"
                f"{line.billed_minutes} min\t{format_amount(line.amount_cents)}{mark}{reason}"
            )
        typer.echo(
            f"charges {format_amount(s.charges_cents)}\tcredits "
            f"{format_amount(s.credits_applied_cents)}\tnet due {format_amount(s.net_cents)} "
            f"{s.currency}"
        )


@billing_app.command("adjust-line")
def adjust_line(statement_id: int, session_id: str, amount: str, reason: str) -> None:
    """Set the amount of one line of a draft statement, with a reason (audited; the next
    compute keeps it)."""
    from server.service_layer import billing_commands as bc

    _handle(bc.AdjustLine(statement_id, session_id, _cents(amount), reason, _policy()))
    typer.echo(f"statement {statement_id}: session {session_id} set to {amount}")


@billing_app.command("totals")
def totals(period_id: int) -> None:
    """The period's totals per machine, per member category and per contribution type."""
    from server.cli import _fail
    from server.domain.billing.money import format_amount

    with _runtime() as runtime, runtime.new_uow() as uow:
        if uow.billing.period(period_id) is None:
            _fail(f"no billing period {period_id}")
        result = uow.billing.totals(period_id)
    for kind, rows in result.items():
        for key, count, cents in rows:
            typer.echo(f"{kind}\t{key}\t{count}\t{format_amount(cents)}")


@billing_app.command("claims")
def claims(
    status: Annotated[str | None, typer.Option(help="pending, approved or rejected")] = None,
    member: Annotated[str | None, typer.Option(help="Only this member's claims.")] = None,
) -> None:
    """List contribution claims: id, status, member, type, quantity, description."""
    with _runtime() as runtime, runtime.new_uow() as uow:
        for c in uow.billing.claims(member_id=member, status=status):
            decision = f"\t{c.decision_reason}" if c.decision_reason else ""
            typer.echo(
                f"{c.id}\t{c.status}\t{c.member_id}\t{c.contribution_type_id}\t"
                f"{c.quantity}\t{c.description}{decision}"
            )


@billing_app.command("claim-submit")
def claim_submit(
    member_id: str,
    contribution_type_id: str,
    quantity: Annotated[int, typer.Argument(help="Minutes (hourly types) or items.")],
    description: str,
    link: Annotated[str | None, typer.Option(help="An http(s) link, e.g. a recipe.")] = None,
) -> None:
    """Submit a contribution claim for a member; a manager decides on it."""
    from server.service_layer import billing_commands as bc

    claim_id = _handle(bc.SubmitClaim(member_id, contribution_type_id, quantity, description,
                                      link))  # fmt: skip
    typer.echo(f"claim {claim_id} submitted")


@billing_app.command("claim-decide")
def claim_decide(
    claim_id: int,
    decision: Annotated[str, typer.Argument(help="approve or reject")],
    reason: str,
) -> None:
    """Approve (the member earns its credits) or reject a pending claim, with a reason."""
    from server.cli import _fail
    from server.service_layer import billing_commands as bc

    if decision not in ("approve", "reject"):
        _fail("the decision is approve or reject")
    _handle(bc.DecideClaim(claim_id, decision == "approve", reason, _policy()))
    typer.echo(f"claim {claim_id} {decision}d")


@billing_app.command("credits-adjust")
def credits_adjust(member_id: str, amount: str, reason: str) -> None:
    """Correct a member's credits by an amount (negative to remove), with a reason: a new
    ledger entry, never an edit."""
    from server.service_layer import billing_commands as bc

    _handle_and_send(bc.AdjustLedger(member_id, "adjust", _cents(amount), reason))
    typer.echo(f"{member_id}: {amount} adjusted")


@billing_app.command("balance")
def balance_show(
    member: Annotated[str | None, typer.Option(help="A member; default: the whole lab.")] = None,
) -> None:
    """Contribution / retribution: hours given vs machine hours used, money earned vs spent."""
    from server.domain.billing.money import format_amount

    with _runtime() as runtime, runtime.new_uow() as uow:
        b = uow.billing.balance(member)
    typer.echo(
        f"{member or 'lab'}\thours given {b.minutes_given / 60:.2f}\tmachine hours used "
        f"{b.machine_minutes_used / 60:.2f}\tearned {format_amount(b.earned_cents)}\t"
        f"spent {format_amount(b.spent_cents)}\tcredits {format_amount(b.credits_cents)}"
    )


@billing_app.command("topup")
def topup(member_id: str, amount: str, reason: str) -> None:
    """Record money paid in advance as credits (a prepaid member's machines get their
    new allowance at once)."""
    from server.service_layer import billing_commands as bc

    _handle_and_send(bc.AdjustLedger(member_id, "topup", _cents(amount), reason))
    typer.echo(f"{member_id}: +{amount}")


@billing_app.command("prepaid")
def prepaid(
    category_id: str,
    threshold: Annotated[str, typer.Option(help="Minimum balance to start a session.")] = "0",
    overdraft: Annotated[str, typer.Option(help="How far below zero a session may go.")] = "0",
    off: Annotated[bool, typer.Option("--off", help="Turn the prepaid option off.")] = False,
) -> None:
    """Make a member category prepaid (or not): its members start at or above the
    threshold, and their sessions stop at the overdraft bound."""
    from server.service_layer import billing_commands as bc

    cmd = bc.SetCategoryPrepaid(category_id, not off, _cents(threshold), _cents(overdraft))
    _handle_and_send(cmd)
    typer.echo(f"{category_id}: prepaid off" if off else
               f"{category_id}: prepaid, threshold {threshold}, overdraft {overdraft}")


@billing_app.command("prepaid-balance")
def prepaid_balance(member_id: str) -> None:
    """A member's prepaid balance: the ledger minus usage not yet on an approved statement."""
    from server.domain.billing.money import format_amount
    from server.service_layer import prepaid as prepaid_service

    with _runtime() as runtime, runtime.new_uow() as uow:
        status = prepaid_service.statuses(uow, {member_id}).get(member_id)
    if status is None:
        typer.echo(f"{member_id}: not in a prepaid category")
        return
    verdict = "may start" if status.may_start else "below the threshold"
    typer.echo(f"{member_id}: {format_amount(status.balance_cents)} ({verdict})")


@billing_app.command("export")
def export(
    period_id: int,
    format: Annotated[str, typer.Option(help="csv, journal, fec or fec-tab")] = "csv",
) -> None:
    """Print the period's statement lines (csv), journal, or FEC."""
    from server.cli import _fail
    from server.domain.billing.accounting import fec_text
    from server.service_layer import billing_views as views

    policy = _policy()
    with _runtime() as runtime, runtime.new_uow() as uow:
        if uow.billing.period(period_id) is None:
            _fail(f"no billing period {period_id}")
        if format == "csv":
            typer.echo(views.period_csv(uow, period_id, policy), nl=False)
        elif format in ("journal", "fec", "fec-tab"):
            lines = views.period_journal(uow, period_id, policy)
            text = (
                views.journal_csv(lines)
                if format == "journal"
                else fec_text(lines, "|" if format == "fec" else "\t")
            )
            typer.echo(text, nl=False)
        else:
            _fail("format is csv, journal, fec or fec-tab")


@billing_app.command("sweep")
def sweep() -> None:
    """Credit supervised sessions, trainings given and maintenance; expire old credits."""
    from server.service_layer import billing_commands as bc

    counts = _handle(bc.SweepCredits(_policy()))
    typer.echo(" ".join(f"{k}={v}" for k, v in counts.items()))


@billing_app.command("ledger")
def ledger_show(member_id: str) -> None:
    """Print a member's credits ledger and balance."""
    from server.domain.billing.ledger import balance
    from server.domain.billing.money import format_amount

    with _runtime() as runtime, runtime.new_uow() as uow:
        chain = uow.billing.chain(member_id)
        for e in chain:
            typer.echo(
                f"#{e.seq}\t{e.at:%Y-%m-%d}\t{e.kind}\t{format_amount(e.amount_cents)}\t"
                f"{e.source_type}:{e.source_id}\t{e.reason}"
            )
        typer.echo(f"balance {format_amount(balance(chain))}")


@billing_app.command("ledger-verify")
def ledger_verify() -> None:
    """Check every member's hash chain; exit status 1 if anything was altered."""
    from server.cli import _fail
    from server.domain.billing.ledger import verify

    with _runtime() as runtime, runtime.new_uow() as uow:
        chains = uow.billing.chains()
    problems = [p for chain in chains.values() for p in verify(chain)]
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        _fail(f"{len(problems)} problems in the credits ledger")
    typer.echo(f"ledger intact: {len(chains)} members, {sum(map(len, chains.values()))} entries")


ledger_app = typer.Typer(help="The credits ledger.", no_args_is_help=True)
ledger_app.command("verify")(ledger_verify)
ledger_app.command("show")(ledger_show)
