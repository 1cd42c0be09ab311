"""`fablab-pi check`'s broker test: the broker accepts this controller's login and a config
signed with its key arrives for its machine, within a timeout.

Each failure is one line that says what to do. With `use_username_as_clientid` on the
broker, this check takes the running service's client id for a moment: stop the service
first, or expect it to reconnect.
"""

from __future__ import annotations

import ssl
import threading
import uuid
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from firmware_pi.config import ControllerConfig
from firmware_pi.snapshot_store import SnapshotVerifier
from protocol import ProtocolError, SignatureError, config_topic, set_tcp_nodelay

DEFAULT_TIMEOUT_S = 10.0


class BrokerCheckError(Exception):
    """The broker test failed; the message says what to do."""


@dataclass(frozen=True)
class BrokerCheck:
    """What the broker test saw: the verified config's snapshot version and badge count."""

    version: int
    badges: int


def check_broker(cfg: ControllerConfig, timeout: float = DEFAULT_TIMEOUT_S) -> BrokerCheck:
    """Log in as the controller, wait for its machine's retained config and verify it."""
    probe = _Probe(cfg)
    try:
        probe.connect(timeout)
        return probe.wait_for_config(timeout)
    finally:
        probe.close()


class _Probe:
    def __init__(self, cfg: ControllerConfig) -> None:
        self.cfg = cfg
        self.topic = config_topic(cfg.site, cfg.machine)
        self.verifier = SnapshotVerifier(
            key=cfg.key, site=cfg.site, machine=cfg.machine, controller_id=cfg.controller_id
        )
        self.connack = threading.Event()
        self.refused: str | None = None
        self.arrived = threading.Event()
        self.result: BrokerCheck | None = None
        self.problem: str | None = None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fablab-pi-check-{cfg.controller_id}-{uuid.uuid4().hex[:6]}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        if cfg.username is not None:
            self.client.username_pw_set(cfg.username, cfg.password)
        if cfg.broker.tls:
            self.client.tls_set(ca_certs=cfg.ca_file)
        self.client.on_socket_open = set_tcp_nodelay
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def connect(self, timeout: float) -> None:
        broker = self.cfg.broker
        where = f"{broker.host}:{broker.port}"
        try:
            self.client.connect(broker.host, broker.port, keepalive=30)
        except ssl.SSLCertVerificationError as exc:
            raise BrokerCheckError(
                f"TLS: the broker at {where} has a certificate that ca_file does not vouch for "
                f"({exc.verify_message}): copy the lab's ca.crt to ca_file, and make sure the "
                "broker's certificate names this host (`fablab tls-cert --host`)"
            ) from None
        except ssl.SSLError as exc:
            raise BrokerCheckError(
                f"TLS with {where} failed ({exc.reason}): is broker_url's port the broker's "
                "TLS listener (8883)?"
            ) from None
        except OSError as exc:
            raise BrokerCheckError(
                f"cannot reach the broker at {where} ({exc.strerror or exc}): check broker_url, "
                "the network and that Mosquitto runs"
            ) from None
        self.client.loop_start()
        if not self.connack.wait(timeout):
            raise BrokerCheckError(
                f"the broker at {where} did not answer the login within {timeout:g} s: is "
                "broker_url an MQTT listener (mqtts:// for the TLS port)?"
            )
        if self.refused is not None:
            raise BrokerCheckError(
                f"the broker refused the login {self.cfg.username!r} ({self.refused}): issue "
                f"new credentials on the server (`fablab controller-credentials "
                f"{self.cfg.machine}`), run `fablab mosquitto-config` and reload Mosquitto"
            )

    def wait_for_config(self, timeout: float) -> BrokerCheck:
        self.client.subscribe(self.topic, qos=1)
        if not self.arrived.wait(timeout):
            raise BrokerCheckError(
                f"the broker accepted the login but no config for machine {self.cfg.machine!r} "
                f"(site {self.cfg.site!r}) arrived within {timeout:g} s: check that the server "
                "runs and knows this machine, and that the broker's ACL is current "
                "(`fablab mosquitto-config`, reload Mosquitto)"
            )
        if self.result is None:
            raise BrokerCheckError(self.problem or "the config could not be read")
        return self.result

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, _c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        if getattr(rc, "is_failure", False):
            self.refused = str(rc)
        self.connack.set()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        try:
            snapshot = self.verifier.verify(bytes(message.payload))
        except SignatureError:
            self.problem = (
                "a config arrived but its signature does not match key_hex: copy the key of the "
                "latest `fablab controller-credentials` output into this config"
            )
        except ProtocolError as exc:
            self.problem = f"a config arrived but cannot be used: {exc}"
        else:
            self.result = BrokerCheck(snapshot.version, len(snapshot.permissions))
        self.arrived.set()
