"""The lab's refusals (domain errors) written in the page's language.

The domain and the service layer stay free of web concerns: they raise a `DomainError`
(or a subclass) with an English message, which the API returns as it is. A page that
shows such an error next to a form passes it through `form_error`, which recognises the
message by its class and wording, takes its values (a number, an e-mail address, a
date) and writes the matching message of the catalogs in the viewer's language.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from starlette.requests import Request

from server.domain.errors import (
    AuthenticationError,
    ConflictError,
    DomainError,
    NotFoundError,
    PermissionDeniedError,
    TooManyAttemptsError,
)
from server.web.i18n import N_, Gettext, gettext_for, request_locale

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """An English domain message (a regular expression naming its values) and the
    catalog message that says it; the values fill the message's %(name)s."""

    kind: type[Exception]
    pattern: re.Pattern[str]
    message: str


def _r(kind: type[Exception], pattern: str, message: str) -> Refusal:
    return Refusal(kind, re.compile(pattern), message)


_QUOTED = r"""['"](?P<{}>.*)['"]"""
REFUSALS = (
    # members, accounts, tokens
    _r(DomainError, r"password must have at least (?P<n>\d+) characters",
       N_("The password must have at least %(n)s characters.")),
    _r(DomainError, r"at most (?P<n>\d+) live tokens: revoke one first",
       N_("You already have %(n)s live tokens, the most allowed: revoke one first.")),
    _r(DomainError, "unknown member category " + _QUOTED.format("category"),
       N_("There is no member category %(category)s.")),
    _r(DomainError, r"this email address cannot be used: choose another one",
       N_("This e-mail address cannot be used: choose another one.")),
    _r(DomainError, r"a member with email (?P<email>.+) already exists",
       N_("A member already has the e-mail address %(email)s.")),
    # machine settings
    _r(DomainError, r"durations must be between 0 and (?P<max>\d+) seconds",
       N_("Durations are 0 to %(max)s seconds.")),
    _r(DomainError, r"warning, grace and supervisor windows must be 0 to 3600 seconds",
       N_("The warning, the card-removal grace and the supervisor window are 0 to 3600 seconds.")),
    _r(DomainError, r"heartbeat_interval_s must be between 5 and 3600",
       N_("The heartbeat interval is 5 to 3600 seconds.")),
    # billing: periods, rates, multipliers, statements
    _r(DomainError, r"a period ends after it starts", N_("A period ends after it starts.")),
    _r(DomainError, r"a period is at most a year", N_("A period is at most a year long.")),
    _r(ConflictError, r"overlaps period (?P<id>\d+) \((?P<start>[\d-]+) to (?P<end>[\d-]+)\)",
       N_("This period overlaps period %(id)s (%(start)s to %(end)s).")),
    _r(ConflictError, r"period (?P<id>\d+) is closed", N_("Period %(id)s is closed.")),
    _r(DomainError, r"prices, minimum charge and free minutes are never negative",
       N_("Prices, the minimum charge and free minutes are never negative.")),
    _r(DomainError, r"a rounding step is 1 to 1440 minutes",
       N_("The rounding step is 1 to 1440 minutes.")),
    _r(ConflictError, r"tariff (?P<tariff>.+) already has a rate from (?P<day>[\d-]+): .*",
       N_("Tariff %(tariff)s already has a rate from %(day)s: rates are never edited, "
          "add one from another date.")),
    _r(NotFoundError, r"no tariff (?P<tariff>.+)", N_("There is no tariff %(tariff)s.")),
    _r(NotFoundError, r"no member category (?P<category>.+)",
       N_("There is no member category %(category)s.")),
    _r(DomainError, r"a multiplier is from 0 to 10", N_("A multiplier is from 0 to 10.")),
    _r(ConflictError, r"an approved statement is immutable: correct it with a credit note",
       N_("An approved statement cannot change: correct it with a credit note.")),
    _r(ConflictError, r"another approval was numbered at the same time: try again",
       N_("Another approval took the same number at the same moment: try again.")),
    _r(NotFoundError, r"statement (?P<id>\d+) has no line for session (?P<session>.+)",
       N_("Statement %(id)s has no line for session %(session)s.")),
    _r(DomainError, r"an adjusted amount is never negative: use a credit note",
       N_("An adjusted amount is never negative: issue a credit note instead.")),
    _r(DomainError, r"an adjustment needs a reason", N_("Give the reason for the adjustment.")),
    _r(ConflictError, r"a credit note corrects an approved statement",
       N_("A credit note corrects an approved statement.")),
    _r(DomainError, r"a credit note is for 0\.01 up to what is left to correct "
       r"\((?P<cents>\d+) cents\)",
       N_("A credit note is for 0.01 up to what is left to correct (%(cents)s cents).")),
    _r(DomainError, r"a credit note needs a reason", N_("Give the reason for the credit note.")),
    _r(DomainError, r"the balance would become negative",
       N_("The member's credit balance would become negative.")),
    # contribution claims
    _r(NotFoundError, r"no active contribution type (?P<kind>.+)",
       N_("There is no active contribution type %(kind)s.")),
    _r(DomainError, r"(?P<kind>.+) is credited automatically: nothing to claim",
       N_("%(kind)s is credited automatically: there is nothing to claim.")),
    _r(DomainError, r"quantity must be 1 to (?P<max>\d+) \(minutes or items\)",
       N_("The quantity is 1 to %(max)s (minutes or items).")),
    _r(DomainError, r"describe the contribution", N_("Describe the contribution.")),
    _r(DomainError, r"the link must be an http\(s\) address",
       N_("The link must be an http:// or https:// address.")),
    _r(ConflictError, r"claim (?P<id>\d+) was already (?P<status>approved|rejected)",
       N_("This claim was already decided.")),
    _r(PermissionDeniedError, r"another manager decides on your own claim",
       N_("Another manager decides on your own claim.")),
    _r(DomainError, r"give a reason for the decision", N_("Give a reason for the decision.")),
    # member import, line by line
    _r(DomainError, r"name is empty", N_("The name is empty.")),
    _r(DomainError, r"name must be at most (?P<n>\d+) printable characters",
       N_("The name is at most %(n)s printable characters.")),
    _r(DomainError, "not an email address: " + _QUOTED.format("email"),
       N_("Not an e-mail address: %(email)s.")),
    _r(DomainError, r"email (?P<email>.+) is already on line (?P<line>\d+)",
       N_("The e-mail address %(email)s is already on line %(line)s.")),
    _r(DomainError, r"badge (?P<badge>.+) is already on line (?P<line>\d+)",
       N_("Badge %(badge)s is already on line %(line)s.")),
    _r(DomainError, r"badge_uid " + _QUOTED.format("badge") + r": .*",
       N_("%(badge)s is not a badge number (4 to 40 hexadecimal digits).")),
    _r(DomainError, r"badge (?P<badge>.+) is already registered",
       N_("Badge %(badge)s is already registered.")),
    _r(DomainError, r"(?P<n>\d+) values but the header has (?P<columns>\d+) columns .*",
       N_("This line has %(n)s values but the header has %(columns)s columns.")),
    # member import, the file as a whole
    _r(DomainError, r"the file is larger than (?P<n>\d+) MB",
       N_("The file is larger than %(n)s MB.")),
    _r(DomainError, r"the file is not UTF-8 text .*",
       N_("The file is not UTF-8 text: save it as “CSV UTF-8”.")),
    _r(DomainError, r"the file contains NUL characters: .*",
       N_("The file contains NUL characters: it is not a CSV text file.")),
    _r(DomainError, r"the file is empty: .*",
       N_("The file is empty: its first line names the columns (name, email, category, "
          "badge_uid).")),
    _r(DomainError, r"missing header: .*",
       N_("The header is missing: the first line names the columns (name, email, category, "
          "badge_uid).")),
    _r(DomainError, r"unknown column\(s\) .*",
       N_("Unknown column: the columns are name, email, category and badge_uid.")),
    _r(DomainError, r"column\(s\) named twice: (?P<columns>.+)",
       N_("Columns named twice: %(columns)s.")),
    _r(DomainError, r"more than (?P<n>\d+) lines: split the file",
       N_("More than %(n)s lines: split the file.")),
    _r(DomainError, r"line (?P<line>\d+): not valid CSV .*", N_("Line %(line)s is not valid CSV.")),
)  # fmt: skip

# What a page says of a refusal it does not know, by class (most specific first).
FALLBACKS = (
    (TooManyAttemptsError, N_("Too many attempts: try again later.")),
    (AuthenticationError, N_("Wrong e-mail or password.")),
    (PermissionDeniedError, N_("Your role does not allow this.")),
    (NotFoundError, N_("What this refers to does not exist (any more).")),
    (ConflictError, N_("This conflicts with what the lab already holds.")),
    (DomainError, N_("The lab's rules refuse this.")),
)  # fmt: skip


def known_refusal(text: str, kind: type[Exception]) -> tuple[str, dict[str, str]] | None:
    """The catalog message of a refusal and its values, if it is one we know."""
    for refusal in REFUSALS:
        found = refusal.pattern.fullmatch(text)
        if found and issubclass(kind, refusal.kind):
            return refusal.message, found.groupdict()
    return None


def translate_refusal(gettext: Gettext, text: str, kind: type[Exception] = DomainError) -> str:
    """A refusal's English `text` through `gettext`: a known refusal in its language;
    otherwise, in its language, what kind of refusal it is, then the domain's own words."""
    known = known_refusal(text, kind)
    if known is not None:
        message, values = known
        return gettext(message, **values)
    logger.info("no translation for the refusal %s: %s", kind.__name__, text)
    general = next((m for cls, m in FALLBACKS if issubclass(kind, cls)), FALLBACKS[-1][1])
    return f"{gettext(general)} ({text})"


def refusal_text(request: Request, text: str, kind: type[Exception] = DomainError) -> str:
    """A refusal's English `text` in the viewer's language (see `translate_refusal`)."""
    return translate_refusal(gettext_for(request_locale(request)), text, kind)


def form_error(request: Request, exc: Exception) -> str:
    """The domain error raised by a form's command, in the viewer's language."""
    return refusal_text(request, str(exc), type(exc))
