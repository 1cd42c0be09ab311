"""Scale-out: two `fablab serve` processes on one PostgreSQL share ingest through an MQTT
shared subscription; kill -9 of one mid-run loses nothing and doubles nothing."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from server.adapters.orm import RawEvent
from tests.faults.conftest import MACHINES, MEMBERS, FaultLab
from tests.faults.harness import (
    BrokerTap,
    ServerProcess,
    Workload,
    seed_lab,
    wait_for,
)
from tests.faults.test_process_faults import Floor
from tests.fixtures import MosquittoServer

SITE = "scaleout"
GROUP = "ingest"


def _server(tmp: Path, name: str, database_url: str, broker: MosquittoServer) -> ServerProcess:
    server = ServerProcess(tmp / name, database_url=database_url, broker_url=broker.url, site=SITE)
    server.env["FABLAB_MQTT_SHARED_GROUP"] = GROUP
    server.env["FABLAB_MQTT_CLIENT_ID"] = name
    return server


def _events_delivered_to(broker: MosquittoServer, client_id: str) -> int:
    """How many controller events the broker handed to this client (its debug log)."""
    pattern = re.compile(rf"Sending PUBLISH to {re.escape(client_id)} .*/events'")
    return len(pattern.findall(broker.log_path.read_text(errors="replace")))


def _doubled_events(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        with Session(engine) as db:
            rows = db.execute(
                select(RawEvent.event_id, func.count())
                .where(RawEvent.event_id.is_not(None))
                .group_by(RawEvent.event_id)
                .having(func.count() > 1)
            ).all()
    finally:
        engine.dispose()
    return [f"{event_id} stored {count} times" for event_id, count in rows]


@pytest.mark.postgres
def test_scale_out_kill9_of_one_server_loses_and_doubles_nothing(
    tmp_path: Path,
    fresh_postgres_url: str,
    mosquitto_factory: Callable[..., MosquittoServer],
) -> None:
    seed_lab(fresh_postgres_url, SITE, MACHINES[:2], MEMBERS)
    broker = mosquitto_factory(persistence=True, extra_config=["log_type debug"])
    first = _server(tmp_path, "fablab-server-a", fresh_postgres_url, broker)
    second = _server(tmp_path, "fablab-server-b", fresh_postgres_url, broker)
    lab = FaultLab(
        site=SITE, tmp=tmp_path, broker=broker, database_url=fresh_postgres_url,
        engine=create_engine(fresh_postgres_url), server=second,
        tap=BrokerTap(broker.host, broker.port, SITE),
        workload=Workload(tmp_path / "workload.jsonl"),
        members={m.member_id: m for m in MEMBERS},
    )  # fmt: skip
    try:
        first.start()
        second.start()
        controllers = [lab.add_controller(spec) for spec in MACHINES[:2]]
        lab.wait_snapshots()
        with Floor(lab, controllers, seed=5):
            wait_for(
                lambda: all(_events_delivered_to(broker, s.env["FABLAB_MQTT_CLIENT_ID"]) >= 3
                            for s in (first, second)),
                30, "events shared between both server processes",
            )  # fmt: skip
            first.kill9()
            lab.workload.note("kill9_server", which="a")
            time.sleep(3)  # the floor keeps working on the one server left
        lab.settle_and_check(timeout=60)  # resends what the dead one had not acked
        assert _doubled_events(fresh_postgres_url) == []
    finally:
        for controller in lab.controllers.values():
            controller.stop()
        first.stop()
        second.stop()
        lab.tap.close()
        lab.engine.dispose()
        broker.stop()
