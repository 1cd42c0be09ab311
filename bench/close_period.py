"""Closing a billing period over many sessions, on PostgreSQL.

    python bench/close_period.py --sessions 100000 300000 1000000 [--members 2000]
        [--database-url postgresql+psycopg://user@host/db]

Without `--database-url` it starts a throwaway PostgreSQL cluster (`initdb` + `pg_ctl`,
the test fixture's: fsync off). For each size it creates a fresh database, migrates it,
seeds 10 machines on 3 tariffs (one rate change on the 15th, a student rate, category
multipliers, free minutes, minimum charges), `--members` members (70 % members, 20 %
students, 10 % non-members), an automatic contribution type for supervision, and the
sessions of October 2026 (1 % of them supervised), generated in SQL. Then it times, through
the message bus as the treasurer's commands run:

- compute: credit sweep + every draft statement priced in SQL (`ComputePeriod`);
- close: credit sweep + the pricing inputs' fingerprint (unchanged since the compute, so
  the drafts are kept, not priced again) + approve every statement (numbers, credits
  spent) + close (`ClosePeriod`): what closing a period the treasurer has computed and
  reviewed costs.
- close, pricing: `ClosePeriod` on the same sessions in a copy of the database taken
  before the compute (`CREATE DATABASE … TEMPLATE`), the period never computed: the first
  credit sweep, every session priced, every statement approved, the period closed, in one
  transaction. This is what a close costs when it must price (inputs changed since the
  compute, or no compute); its charges must equal the other run's.

Results print as Markdown for docs/benchmarks.md. Not a test: nothing asserts.

`--explain` also prints, for each size, PostgreSQL's `EXPLAIN (ANALYZE, BUFFERS)` of the
pricing of the lines (run after the close on the same sessions, in a transaction rolled
back): where a pricing's time goes, triggers included.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from server.adapters.billing_sql import draft_lines_insert  # noqa: E402
from server.adapters.migrations import upgrade  # noqa: E402
from server.adapters.orm_billing import BillingLine, BillingPeriod, BillingStatement  # noqa: E402
from server.bootstrap import ServerRuntime  # noqa: E402
from server.config import Settings  # noqa: E402
from server.domain.billing.policy import BillingPolicy  # noqa: E402
from server.service_layer import billing_commands as bc  # noqa: E402
from server.service_layer import commands as cmds  # noqa: E402
from tests.fixtures.postgres import (  # noqa: E402
    PostgresCluster,
    create_database,
    create_database_from_template,
    drop_database,
    unique_database_name,
    with_database,
)

POLICY = BillingPolicy(credit_cap_percent=50)
MACHINES = 10


def _seed(runtime: ServerRuntime, members: int) -> None:
    bus, at = runtime.bus, datetime(2026, 9, 1, tzinfo=UTC)
    for i in range(MACHINES):
        bus.handle(cmds.AddMachine(f"m{i}", f"Machine {i}", "lab"))
    bus.handle(bc.AddTariff("cutting", "Cutting", ("m0", "m1", "m2"), at=at))
    bus.handle(bc.AddTariff("milling", "Milling", ("m3", "m4", "m5"), at=at))
    bus.handle(bc.AddTariff("printing", "Printing", ("m6", "m7", "m8"), at=at))  # m9: free
    october = date(2026, 10, 1)
    bus.handle(bc.AddRate("cutting", october, POLICY, 1200, 0, 200, 15))
    bus.handle(bc.AddRate("cutting", date(2026, 10, 15), POLICY, 1500, 0, 600, 15))
    bus.handle(bc.AddRate("cutting", october, POLICY, 600, 0, 100, 15, category_id="student"))
    bus.handle(bc.AddRate("milling", october, POLICY, 600, 2400, 0, 6, 60))
    bus.handle(bc.AddRate("printing", october, POLICY, 200, 0, 0, 1, 120))
    bus.handle(bc.SetCategoryMultiplier("non-member", 15_000))
    bus.handle(
        bc.AddContributionType(
            "supervising", "Supervising", "hour", "money", 1000, "supervision", at=at
        )
    )
    categories = ["member"] * 7 + ["student"] * 2 + ["non-member"]
    with runtime.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO member (id, name, category, active, created_at) "
                "SELECT 'u' || g, 'Member ' || g, (CAST(:cats AS text[]))[1 + g % 10], true, now() "
                "FROM generate_series(0, :n - 1) AS g"
            ),
            {"cats": categories, "n": members},
        )


SESSIONS_SQL = """
INSERT INTO usage_session (id, machine_id, controller_id, member_id, reported_member_id,
    started_at, ended_at, elapsed_seconds, busy_seconds, busy, stale_snapshot,
    maintenance_override, supervisor_member_id, decided_online)
SELECT 'b' || g, 'm' || (g % 10), 'm' || (g % 10), 'u' || (g % :members),
    'u' || (g % :members), s.start, s.start + make_interval(secs => s.elapsed), s.elapsed,
    floor(s.elapsed * 0.6), false, false, false,
    CASE WHEN g % 100 = 0 THEN 'u' || ((g + 1) % :members) END, false
FROM generate_series(1, :n) AS g,
LATERAL (SELECT timestamp '2026-09-30 22:00' + make_interval(secs => (g::bigint * 7919)
                 % (31 * 86400 - 7 * 3600)) AS start,
                (60 + (g::bigint * 104729) % 14400)::float8 + 0.25 AS elapsed) AS s
"""


def _explain_pricing(runtime: ServerRuntime, period_id: int) -> str:
    """EXPLAIN ANALYZE of the lines' pricing over the period's sessions, as if none were
    billed yet (the period reopened and its statements back to drafts, all rolled back)."""
    with runtime.engine.connect() as conn:
        transaction = conn.begin()
        try:
            conn.execute(text("SET LOCAL work_mem = '256MB'"))
            conn.execute(text("SET LOCAL jit = off"))
            conn.execute(text("ALTER TABLE billing_statement DISABLE TRIGGER USER"))
            conn.execute(text("UPDATE billing_statement SET status = 'draft'"))
            conn.execute(text("DELETE FROM billing_line"))
            conn.execute(text("UPDATE billing_period SET status = 'open'"))
            conn.execute(text("ANALYZE billing_statement"))  # as the pricing does
            period = Session(bind=conn).get_one(BillingPeriod, period_id)
            # No adjustments in this period: the pricing leaves their join out.
            statement = draft_lines_insert(period, "postgresql", adjusted=False)
            sql = statement.compile(conn, compile_kwargs={"literal_binds": True})
            plan = conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")).scalars().all()
        finally:
            transaction.rollback()
    return "\n".join(plan)


def _runtime(url: str) -> ServerRuntime:
    return ServerRuntime(Settings(database_url=url, site="lab"), mqtt_enabled=False)


def _charges(runtime: ServerRuntime) -> tuple[int, int]:
    """(lines, sum of the statements' charges in cents)."""
    with runtime.new_uow() as uow:
        lines = uow.session.scalar(select(func.count()).select_from(BillingLine))
        total = uow.session.scalar(select(func.sum(BillingStatement.charges_cents)))
    return int(lines or 0), int(total or 0)


def _generate(admin_url: str, name: str, sessions: int, members: int) -> float:
    """A fresh database `name`, migrated and seeded: the seconds the sessions took."""
    create_database(admin_url, name)
    url = with_database(admin_url, name)
    upgrade(url)
    runtime = _runtime(url)
    try:
        _seed(runtime, members)
        started = time.perf_counter()
        with runtime.engine.begin() as conn:
            conn.execute(text(SESSIONS_SQL), {"n": sessions, "members": members})
            conn.execute(text("ANALYZE"))
        return time.perf_counter() - started
    finally:
        runtime.engine.dispose()


def _close_pricing(admin_url: str, template: str) -> tuple[float, int, int]:
    """ClosePeriod on a copy of `template`, its period never computed: (seconds, lines,
    charges)."""
    name = unique_database_name("fablab_bench")
    create_database_from_template(admin_url, name, template)
    runtime = _runtime(with_database(admin_url, name))
    try:
        period = runtime.bus.handle(bc.OpenPeriod(date(2026, 10, 1), POLICY))
        started = time.perf_counter()
        runtime.bus.handle(bc.ClosePeriod(period, POLICY))
        seconds = time.perf_counter() - started
        return seconds, *_charges(runtime)
    finally:
        runtime.engine.dispose()
        drop_database(admin_url, name)


def _one_size(
    admin_url: str, sessions: int, members: int, explain: bool
) -> tuple[dict[str, float], str]:
    name = unique_database_name("fablab_bench")
    generated = _generate(admin_url, name, sessions, members)
    try:
        pricing, pricing_lines, pricing_total = _close_pricing(admin_url, name)
        runtime = _runtime(with_database(admin_url, name))
        try:
            period = runtime.bus.handle(bc.OpenPeriod(date(2026, 10, 1), POLICY))
            started = time.perf_counter()
            drafts = runtime.bus.handle(bc.ComputePeriod(period, POLICY))
            computed = time.perf_counter() - started
            started = time.perf_counter()
            approved = runtime.bus.handle(bc.ClosePeriod(period, POLICY))
            closed = time.perf_counter() - started
            lines, total = _charges(runtime)
            assert drafts == approved and (lines, total) == (pricing_lines, pricing_total)
            plan = _explain_pricing(runtime, period) if explain else ""
        finally:
            runtime.engine.dispose()
        return {
            "sessions": sessions,
            "lines": float(lines),
            "statements": approved,
            "generate": generated,
            "compute": computed,
            "close": closed,
            "close_pricing": pricing,
            "charges": total / 100,
        }, plan
    finally:
        drop_database(admin_url, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--database-url", help="an existing PostgreSQL server's URL")
    parser.add_argument("--explain", action="store_true", help="print the pricing's plan")
    args = parser.parse_args()
    cluster = None
    admin_url = args.database_url
    if admin_url is None:
        cluster = PostgresCluster()
        cluster.start()
        admin_url = cluster.url
    try:
        runs = [_one_size(admin_url, n, args.members, args.explain) for n in args.sessions]
    finally:
        if cluster is not None:
            cluster.stop()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(
        "| sessions | lines | statements | compute (s) | close (s) | close, pricing (s) "
        "| close, pricing µs/session |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r, _ in runs:
        per = r["close_pricing"] / r["sessions"] * 1e6
        print(
            f"| {r['sessions']:,.0f} | {r['lines']:,.0f} | {r['statements']:,.0f} | "
            f"{r['compute']:.2f} | {r['close']:.2f} | {r['close_pricing']:.2f} | {per:.1f} |"
        )
        print(f"<!-- generated in {r['generate']:.1f} s; charges {r['charges']:,.2f} -->")
    for r, plan in runs:
        if plan:
            print(f"\nPricing of {r['sessions']:,.0f} sessions:\n{plan}")


if __name__ == "__main__":
    main()
