"""Words the pages show for the system's codes (levels, end reasons, states), translated."""

from __future__ import annotations

from server.web.i18n import N_

LEVELS = {
    "supervised": N_("Supervised"),
    "autonomous": N_("Autonomous"),
    "trainer": N_("Trainer"),
}
END_REASONS = {
    "badge": N_("badge"),
    "card_removed": N_("card removed"),
    "idle_timeout": N_("idle too long"),
    "max_duration": N_("maximum duration"),
    "remote_lock": N_("locked remotely"),
    "out_of_service": N_("out of service"),
    "oops": N_("problem reported"),
    "controller_restart": N_("controller restarted"),
    "shutdown": N_("controller stopped"),
    "permission_revoked": N_("permission revoked"),
    "balance_exhausted": N_("prepaid balance used up"),
}
COMMAND_STATUSES = {
    "pending": N_("pending"),
    "applied": N_("applied"),
    "expired": N_("expired"),
}
BADGE_STATUSES = {
    "active": N_("active"),
    "lost": N_("lost"),
    "blocked": N_("blocked"),
}
MODES = {"toggle": N_("Tap to start, tap to end"), "hold": N_("Badge stays on the reader")}
BILLING = {
    "open": N_("open"),
    "computed": N_("computed"),
    "closed": N_("closed"),
    "draft": N_("draft"),
    "approved": N_("approved"),
    "pending": N_("pending"),
    "rejected": N_("rejected"),
    "statement": N_("statement"),
    "credit_note": N_("credit note"),
    "earn": N_("contribution credited"),
    "spend": N_("used by a statement"),
    "expire": N_("expired"),
    "topup": N_("paid in advance"),
    "adjust": N_("adjustment"),
}
ALL = {"levels": LEVELS, "end_reasons": END_REASONS, "command_statuses": COMMAND_STATUSES,
       "badge_statuses": BADGE_STATUSES, "modes": MODES, "billing": BILLING}  # fmt: skip
