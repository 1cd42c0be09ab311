"""Languages of the web pages: gettext catalogs (Babel), negotiation, locale formatting."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from decimal import Decimal
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_datetime, format_skeleton, format_time
from babel.numbers import format_currency, format_decimal
from babel.support import NullTranslations, Translations
from starlette.requests import Request

from dashboards import TRANSLATIONS_DIR

LOCALES = ("en", "fr")
LANG_COOKIE = "fablab_lang"
Gettext = Callable[..., str]


@functools.cache
def translations(locale: str) -> NullTranslations:
    """The compiled catalog of the locale (English falls back to the message ids)."""
    return Translations.load(str(TRANSLATIONS_DIR), [locale], domain="messages")


def parse_accept_language(header: str) -> list[str]:
    """Language tags of an Accept-Language header, most wanted first (q=0 dropped)."""
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and tag != "*" and quality > 0:
            weighted.append((-quality, position, tag))
    return [tag for _, _, tag in sorted(weighted)]


def negotiate(cookie: str | None, accept_language: str | None, default: str) -> str:
    """The remembered choice, else the browser's first language we have, else `default`."""
    if cookie in LOCALES:
        return str(cookie)
    for tag in parse_accept_language(accept_language or ""):
        primary = tag.replace("_", "-").split("-")[0].lower()
        if primary in LOCALES:
            return primary
    return default if default in LOCALES else "en"


def request_locale(request: Request) -> str:
    settings = request.app.state.runtime.settings
    return negotiate(
        request.cookies.get(LANG_COOKIE),
        request.headers.get("accept-language"),
        settings.default_locale,
    )


def gettext_for(locale: str) -> Gettext:
    """`_(message, **values)`: the translated message, %-formatted with the values."""
    catalog = translations(locale)

    def _(message: str, **values: object) -> str:
        text = catalog.gettext(message)
        return text % values if values else text

    return _


def tr(request: Request, message: str, **values: object) -> str:
    """The message in the request's language (extracted for the catalogs as `tr:2`)."""
    return gettext_for(request_locale(request))(message, **values)


class Formatter:
    """Dates in the lab's time zone, numbers and money, written the locale's way."""

    def __init__(self, locale: str, timezone: str, currency: str = "EUR") -> None:
        self.locale = Locale.parse(locale)
        self.tz = ZoneInfo(timezone)
        self.currency_code = currency

    def datetime(self, value: dt.datetime | None, fmt: str = "short") -> str:
        if value is None:
            return ""
        return format_datetime(value, fmt, tzinfo=self.tz, locale=self.locale)

    def date(self, value: dt.date | dt.datetime | None, fmt: str = "medium") -> str:
        if value is None:
            return ""
        if isinstance(value, dt.datetime):
            value = value.astimezone(self.tz).date()
        return format_date(value, fmt, locale=self.locale)

    def last_day(self, end: dt.date, fmt: str = "medium") -> str:
        """The last day of a span whose `end` is excluded (a billing period's ends_on)."""
        return self.date(end - dt.timedelta(days=1), fmt)

    def time(self, value: dt.datetime | None, fmt: str = "short") -> str:
        return "" if value is None else format_time(value, fmt, tzinfo=self.tz, locale=self.locale)

    def day_month(self, value: dt.date) -> str:
        """Day and month only, short, in the locale's order (31/08, 8/31)."""
        return format_skeleton("Md", dt.datetime(value.year, value.month, value.day),
                               locale=self.locale)  # fmt: skip

    def month(self, value: dt.date) -> str:
        return format_date(value, "LLLL y", locale=self.locale)

    def axis(self, value: float) -> str:
        """A chart axis label: whole numbers plain, fractions with two digits."""
        return self.number(value, 0 if value == int(value) else 2)

    def number(self, value: float | int | Decimal, digits: int = 0) -> str:
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(value, pattern, locale=self.locale)

    def currency(self, value: Decimal | int) -> str:
        return format_currency(Decimal(value), self.currency_code, locale=self.locale)

    def hours(self, seconds: float) -> str:
        return self.number(seconds / 3600, 1)

    def duration(self, seconds: float) -> str:
        """H:MM:SS, the same in every locale."""
        total = max(int(seconds), 0)
        return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"

    def local(self, value: dt.datetime) -> dt.datetime:
        return value.astimezone(self.tz)


def N_(message: str) -> str:  # noqa: N802 - the gettext convention for "mark only"
    """Mark a message for the catalogs where it is translated later (a label in a table)."""
    return message
