"""Who may do what: roles, the acting person, and the training rules they are held to."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from protocol import Level

LEVEL_RANK = {Level.SUPERVISED: 1, Level.AUTONOMOUS: 2, Level.TRAINER: 3}


class Role(StrEnum):
    """Lab-wide roles. Everyone is a maker; trainer is held per training type."""

    MAKER = "maker"
    TRAINER = "trainer"
    MANAGER = "manager"
    TREASURER = "treasurer"
    ADMIN = "admin"


GRANTABLE_ROLES = frozenset({Role.MANAGER, Role.TREASURER, Role.ADMIN})


@dataclass(frozen=True)
class Principal:
    """The authenticated person making a request."""

    member_id: str
    roles: frozenset[Role] = frozenset()
    trainer_of: frozenset[str] = field(default_factory=frozenset)  # training type ids

    def has(self, role: Role) -> bool:
        """Admins hold every role; trainer means trainer of at least one training type."""
        if role is Role.MAKER or Role.ADMIN in self.roles:
            return True
        if role is Role.TRAINER:
            return bool(self.trainer_of) or Role.MANAGER in self.roles
        return role in self.roles

    @property
    def is_manager(self) -> bool:
        return self.has(Role.MANAGER)


def may_grant(actor: Principal, training_type_id: str, level: Level) -> bool:
    """Managers grant any level; a trainer of the type grants up to autonomous."""
    if actor.is_manager:
        return True
    return (
        training_type_id in actor.trainer_of and LEVEL_RANK[level] <= LEVEL_RANK[Level.AUTONOMOUS]
    )


def may_revoke(actor: Principal, training_type_id: str, level: Level) -> bool:
    """Revoking follows granting: what you may grant, you may take back."""
    return may_grant(actor, training_type_id, level)
