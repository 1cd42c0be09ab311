"""Mosquitto's password file, ACL and listener settings, generated from the controllers
registered on the server (`fablab mosquitto-config`).

One naming everywhere: a controller logs in as `controller_username(controller_id)`,
the name `fablab controller-credentials` issues, and the ACL lets that user reach only its
own machine's topics. On the controllers' TLS listener the broker takes the username as
the client id, so no login can take another client's id and push it off the broker.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from protocol import TopicKind
from protocol.topics import ROOT, machine_topic

CONTROLLER_USERNAME_PREFIX = "controller-"
PASSWD_FILE = "passwd"  # noqa: S105 (a file name)
ACL_FILE = "acl"
CONF_FILE = "fablab.conf"
# What a controller sends, and what it reads (docs/protocol.md).
CONTROLLER_WRITES = (TopicKind.STATUS, TopicKind.EVENTS, TopicKind.AUTH_REQUEST)
CONTROLLER_READS = (TopicKind.CONFIG, TopicKind.ACK, TopicKind.COMMAND, TopicKind.AUTH_RESPONSE)


def controller_username(controller_id: str) -> str:
    """The MQTT username of a controller: the one name the credentials and the ACL use."""
    return f"{CONTROLLER_USERNAME_PREFIX}{controller_id}"


@dataclass(frozen=True)
class BrokerLogin:
    """One line of the password file: a username and its `mosquitto_passwd` hash."""

    username: str
    password_hash: str


@dataclass(frozen=True)
class ControllerGrant:
    """A controller's login and the machine whose topics it may use."""

    controller_id: str
    login: BrokerLogin
    site: str
    machine: str


@dataclass(frozen=True)
class Listeners:
    """Where the broker listens: the server in plain MQTT (loopback by default), the
    controllers over TLS with the broker's certificate and key."""

    server_host: str = "127.0.0.1"
    server_port: int = 1883
    controller_port: int = 8883
    certfile: Path = Path("/etc/mosquitto/fablab/certs/broker.crt")
    keyfile: Path = Path("/etc/mosquitto/fablab/certs/broker.key")


def render_passwd(server: BrokerLogin, controllers: Sequence[ControllerGrant]) -> str:
    """The password file: the server's login, then one line per controller."""
    logins = [server, *(c.login for c in controllers)]
    return "".join(f"{login.username}:{login.password_hash}\n" for login in logins)


def render_acl(server_username: str, controllers: Sequence[ControllerGrant]) -> str:
    """The ACL: the server reaches every fablab topic, each controller its own machine's."""
    lines = [
        "# fablab-monitor broker ACL, written by `fablab mosquitto-config` from the",
        "# controllers registered on the server: do not edit, run the command again after",
        "# adding, replacing or revoking a controller, then reload Mosquitto.",
        "# Nothing is granted to anonymous clients (no line before the first `user`).",
        "",
        "# the server",
        f"user {server_username}",
        f"topic readwrite {ROOT}/#",
    ]
    for grant in controllers:
        lines += [
            "",
            f"# controller {grant.controller_id} of machine {grant.machine} (site {grant.site})",
            f"user {grant.login.username}",
        ]
        lines += [f"topic write {machine_topic(grant.site, grant.machine, k)}"
                  for k in CONTROLLER_WRITES]
        lines += [f"topic read {machine_topic(grant.site, grant.machine, k)}"
                  for k in CONTROLLER_READS]
    return "\n".join(lines) + "\n"


def render_conf(config_dir: Path, listeners: Listeners) -> str:
    """Mosquitto settings for fablab-monitor, to include from the main mosquitto.conf
    (`include_dir config_dir`); paths point into `config_dir`."""
    return f"""\
# fablab-monitor: Mosquitto 2.x settings, written by `fablab mosquitto-config`.
# The main mosquitto.conf (pid file, persistence, log file) includes this folder's
# *.conf with `include_dir {config_dir}` (docs/operations.md). Topics: docs/protocol.md.

# --- who may connect, and to what --------------------------------------------------------
# Logins: the server's and one per registered controller; each controller reaches only
# its own machine's topics. Reloaded on SIGHUP (systemctl reload mosquitto).
per_listener_settings false
allow_anonymous false
password_file {config_dir / PASSWD_FILE}
acl_file {config_dir / ACL_FILE}

# --- the server: plain MQTT, on this machine only ----------------------------------------
listener {listeners.server_port} {listeners.server_host}

# --- controllers: MQTT over TLS from the workshop network --------------------------------
# The client id of each connection is its username: a controller's login cannot take
# the server's (or another controller's) client id and push it off the broker.
listener {listeners.controller_port}
certfile {listeners.certfile}
keyfile {listeners.keyfile}
tls_version tlsv1.2
require_certificate false
use_username_as_clientid true

# --- durability --------------------------------------------------------------------------
# Events wait here for the server while it is down (QoS 1, persistent session); the
# controllers' outboxes keep every event until acked anyway.
max_queued_messages 50000
max_inflight_messages 20
# Forget persistent sessions of clients gone for two weeks (decommissioned controllers).
persistent_client_expiration 14d

# --- latency -----------------------------------------------------------------------------
# Nagle off on every client socket: an online check and its answer are small QoS 1
# packets that would otherwise each wait for the peer's delayed ACK (~40 ms per hop).
set_tcp_nodelay true
"""


def write_private(path: Path, text: str, mode: int = 0o640) -> None:
    """Replace `path` atomically (a broker reloading meanwhile reads the old or the new
    file, never half of one) with `mode` permissions."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_broker_config(
    out_dir: Path,
    server: BrokerLogin,
    controllers: Sequence[ControllerGrant],
    listeners: Listeners,
) -> list[Path]:
    """Write passwd, acl and fablab.conf into `out_dir`; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = out_dir.resolve()
    files = {
        PASSWD_FILE: render_passwd(server, controllers),
        ACL_FILE: render_acl(server.username, controllers),
        CONF_FILE: render_conf(out_dir, listeners),
    }
    written = []
    for name, text in files.items():
        write_private(out_dir / name, text)
        written.append(out_dir / name)
    return written
