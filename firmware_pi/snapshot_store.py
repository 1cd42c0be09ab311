"""The last valid signed config, kept on disk so decisions survive a restart offline."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from firmware_pi.faults import aside_path
from protocol import PermissionSnapshot, ProtocolError, verify_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotVerifier:
    """Accepts a `config` payload only if it is signed for, and addressed to, this controller."""

    key: bytes = field(repr=False)
    site: str
    machine: str
    controller_id: str

    def verify(
        self, payload: bytes | str, *, held_version: int | None = None
    ) -> PermissionSnapshot:
        """The verified snapshot; ProtocolError (or a subclass) when it must not be used."""
        snapshot = verify_config(payload, self.key, held_version=held_version)
        # The signature proves who wrote it, not where it belongs: a snapshot meant for
        # another machine must not open this one.
        for name, expected in (
            ("site", self.site),
            ("machine", self.machine),
            ("controller_id", self.controller_id),
        ):
            actual = getattr(snapshot, name)
            if actual != expected:
                raise ProtocolError(f"snapshot.{name}", f"is {actual!r}, this is {expected!r}")
        return snapshot


@dataclass(frozen=True)
class RejectedFile:
    """A stored snapshot that could not be used, moved aside, and why."""

    path: Path
    reason: str


class SnapshotStore:
    """One file holding the raw signed payload of the last accepted config."""

    def __init__(self, path: str | Path, verifier: SnapshotVerifier) -> None:
        self.path = Path(path)
        self.verifier = verifier
        self.rejected: RejectedFile | None = None  # set by load(), for the app to report

    def load(self, *, quarantine: bool = True) -> PermissionSnapshot | None:
        """The stored snapshot re-verified, or None if missing, corrupt or forged.

        A corrupt or forged file is moved aside (`<name>.corrupt-<UTC time>`) and
        `rejected` says where and why; the controller then starts without a snapshot
        (denying everyone) until the server's retained config arrives. With
        `quarantine=False` (a diagnostic look) the file stays where it is.
        """
        try:
            payload = self.path.read_bytes()
        except FileNotFoundError:
            log.info("no stored snapshot at %s: starting without one", self.path)
            return None
        except OSError as exc:
            log.error("cannot read stored snapshot %s: %s", self.path, exc)
            return None
        try:
            snapshot = self.verifier.verify(payload)
        except ProtocolError as exc:
            if not quarantine:
                log.error("stored snapshot %s unusable: %s", self.path, exc)
                return None
            moved = self._quarantine()
            self.rejected = RejectedFile(moved, str(exc))
            log.error("stored snapshot %s rejected (%s): moved to %s, starting without one",
                      self.path, exc, moved)
            return None
        log.info("loaded snapshot version %d from %s", snapshot.version, self.path)
        return snapshot

    def _quarantine(self) -> Path:
        target = aside_path(self.path)
        os.replace(self.path, target)
        return target

    def save(self, payload: bytes) -> None:
        """Replace the stored payload atomically: the file is always old or new, never torn."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(payload)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        # The rename itself is durable only once the directory entry is on disk.
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
