"""FabOMatic 1.0.7's MQTT backend, alone, for bench/online_check.py (the peer).

    <fabomatic-venv>/bin/python bench/fabomatic_backend.py BADGE_UID

Run by the Python of the virtual environment FabOMatic is installed in, with HOME set to
a folder whose `.config/FabOMatic/settings.toml` names the broker and a fresh SQLite
database (FabOMatic reads its settings from there). It starts FabOMatic's own `Backend`
(database migrations and seed, MQTT interface, message mapper) without its web app,
adds through FabOMatic's models one member holding the badge and an authorization for
the seeded machine (a role without `authorize_all`, so each check looks the
authorization up), prints `ready <machine id>`, and serves until its standard input
closes. Boards ask `machine/<id>` with `{"action": "checkuser", "uid": ...}`; the
backend answers on `machine/<id>/reply`.
"""

from __future__ import annotations

import logging
import sys

from FabOMatic.__main__ import Backend  # type: ignore[import-not-found]
from FabOMatic.database.models import (  # type: ignore[import-not-found]
    Authorization,
    Machine,
    Role,
    User,
)


def seed(backend: Backend, uid: str) -> int:
    """A member with the badge, authorized on the seeded machine; the machine's id."""
    with backend._db.getSession() as session:
        machine = session.query(Machine).order_by(Machine.machine_id).first()
        role = Role(role_name="Bench members", authorize_all=False, reserved=False,
                    maintenance=False, backend_admin=False)  # fmt: skip
        session.add(role)
        session.flush()
        user = User(name="Bench", surname="Member", role_id=role.role_id, card_UUID=uid,
                    email="bench@example.org")  # fmt: skip
        session.add(user)
        session.flush()
        session.add(Authorization(user_id=user.user_id, machine_id=machine.machine_id))
        session.commit()
        return int(machine.machine_id)


def main() -> None:
    # WARNING, not FabOMatic's default DEBUG: the peer is measured without log writes.
    logging.basicConfig(level=logging.WARNING)
    backend = Backend()
    if not backend.connect():
        raise SystemExit("FabOMatic backend could not connect")
    machine_id = seed(backend, sys.argv[1])
    print(f"ready {machine_id}", flush=True)
    sys.stdin.read()  # until the bench closes our standard input
    backend.disconnect()


if __name__ == "__main__":
    main()
