"""The search parameters of the activity log, parsed once for every way of reading it.

The REST API, the CSV export, the admin page and the ``notify_tracking_status``
command all turn their input into a :class:`DeliveryFilter` with :func:`parse`, so a
parameter means the same everywhere and bad input fails the same way: a
:class:`FilterError` whose ``errors`` name each bad parameter (a 400, never a 500).

Every filter is written so that the database can answer it from an index on the
deliveries table: the recipient is matched whole or by prefix, in any case
(``UPPER(recipient) = UPPER('...')``, ``UPPER(recipient) LIKE UPPER('abc%')``, the
wildcards escaped by Django), from the index on ``UPPER(recipient)``; never with a
leading wildcard. See docs/activity-log.md for the query plans.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db.models import Model, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext as _

from .. import status as st
from ..models import Delivery
from ..retention import placeholders
from ..targets import BadTarget, parse_key

#: The search parameters, in the order the docs and the forms list them.
PARAMETERS: tuple[str, ...] = (
    "recipient",
    "recipient_prefix",
    "subject",
    "target",
    "status",
    "channel",
    "sender",
    "since",
    "until",
)
#: Words the status filter accepts besides the status words themselves.
STATUS_ALIASES = {"read": st.OPENED}
MAX_VALUE_LENGTH = 320
# Dates far out would overflow once shifted to UTC or to the end of their day.
MIN_YEAR, MAX_YEAR = 1900, 9000
MAX_SUBJECT_WORDS = 8
MAX_LIST_ITEMS = len(st.STATUSES)
CHANNEL_NAME = re.compile(r"^[\w.-]{1,32}$")
# NUL and other control characters: PostgreSQL refuses NUL in a string literal.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class FilterError(ValueError):
    """Bad search parameters; ``errors`` maps each bad parameter to a readable reason."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{name}: {reason}" for name, reason in errors.items()))


@dataclass(frozen=True)
class DeliveryFilter:
    """Validated search criteria; :meth:`apply` narrows a Delivery queryset to them."""

    recipients: tuple[str, ...] = ()
    recipient_prefixes: tuple[str, ...] = ()
    subject_words: tuple[str, ...] = ()
    target: tuple[int, str] | None = None
    statuses: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    sender_ids: tuple[int, ...] | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None  # exclusive

    def apply(self, queryset: QuerySet[Delivery]) -> QuerySet[Delivery]:
        """``queryset`` narrowed to the deliveries matching every criterion."""
        conditions = [*self._recipient_conditions(), *self._notification_conditions()]
        if self.statuses:
            conditions.append(Q(status__in=self.statuses))
        if self.channels:
            conditions.append(Q(channel__in=self.channels))
        if self.since is not None:
            conditions.append(Q(created_at__gte=self.since))
        if self.until is not None:
            conditions.append(Q(created_at__lt=self.until))
        return queryset.filter(*conditions)

    def _recipient_conditions(self) -> list[Q]:
        conditions = []
        if self.recipients:
            exact = [Q(recipient__iexact=address) for address in self.recipients]
            conditions.append(reduce(operator.or_, exact))
        if self.recipient_prefixes:
            prefixes = [Q(recipient__istartswith=prefix) for prefix in self.recipient_prefixes]
            conditions.append(reduce(operator.or_, prefixes))
        return conditions

    def _notification_conditions(self) -> list[Q]:
        conditions = [Q(notification__subject__icontains=word) for word in self.subject_words]
        if self.target is not None:
            content_type_id, object_id = self.target
            conditions.append(
                Q(notification__content_type_id=content_type_id, notification__object_id=object_id)
            )
        if self.sender_ids is not None:
            conditions.append(Q(notification__sender_id__in=self.sender_ids))
        return conditions


def parse(params: Mapping[str, Any], *, extra: Iterable[str] = ()) -> DeliveryFilter:
    """The filter that ``params`` (a QueryDict or a dict of strings) describe.

    ``extra`` names parameters the caller handles itself (``cursor``, ``page_size``);
    any other unknown parameter is an error, so a typo never silently widens a search.
    Raises :class:`FilterError` naming every bad parameter.
    """
    errors: dict[str, str] = {}
    values = _single_values(params, set(extra), errors)
    criteria: dict[str, Any] = {}
    for name, value in values.items():
        try:
            criteria.update(PARSERS[name](value))
        except ValueError as error:
            errors[name] = str(error)
    since, until = criteria.get("since"), criteria.get("until")
    if since is not None and until is not None and since >= until:
        errors["until"] = _("must be later than since")
    if errors:
        raise FilterError(errors)
    return DeliveryFilter(**criteria)


def _single_values(
    params: Mapping[str, Any], extra: set[str], errors: dict[str, str]
) -> dict[str, str]:
    """The non-empty search values of ``params``, one string each; problems go to errors."""
    values = {}
    for name in params:
        if name in extra:
            continue
        if name not in PARAMETERS:
            errors[name] = _("unknown parameter; the known ones are: %(known)s") % {
                "known": ", ".join(PARAMETERS)
            }
            continue
        given = _all_values(params, name)
        if len(given) > 1:
            errors[name] = _("give this parameter once")
            continue
        value = given[0] if given else ""
        problem = _problem_with(value)
        if problem:
            errors[name] = problem
        elif value.strip():
            values[name] = value.strip()
    return values


def _all_values(params: Mapping[str, Any], name: str) -> list[Any]:
    getlist = getattr(params, "getlist", None)
    return list(getlist(name)) if getlist else [params[name]]


def _problem_with(value: Any) -> str | None:
    if not isinstance(value, str):
        return _("must be text")
    if len(value) > MAX_VALUE_LENGTH:
        return _("is too long (at most %(max)d characters)") % {"max": MAX_VALUE_LENGTH}
    if CONTROL_CHARACTERS.search(value):
        return _("must not contain control characters")
    return None


# --- one parser per parameter: value -> criteria, or ValueError with the reason -------


def address_matches(address: str) -> Q:
    """Deliveries to ``address`` in any case, or to one of its placeholders (anonymised
    with the current key or a replaced one): the activity log's ``recipient=`` for one
    address, and the admin's search by address."""
    addresses = (address, *placeholders(address))
    return reduce(operator.or_, (Q(recipient__iexact=one) for one in addresses))


def _recipient(value: str) -> dict[str, Any]:
    """The address in any case, and its placeholders (one per key, the current and the
    replaced ones): anonymised deliveries show too."""
    return {"recipients": (value, *placeholders(value))}


def _recipient_prefix(value: str) -> dict[str, Any]:
    """The beginning of an address, in any case (a prefix, never a substring)."""
    return {"recipient_prefixes": (value,)}


def _subject(value: str) -> dict[str, Any]:
    words = tuple(dict.fromkeys(value.split()))
    if len(words) > MAX_SUBJECT_WORDS:
        raise ValueError(_("give at most %(max)d words") % {"max": MAX_SUBJECT_WORDS})
    return {"subject_words": words}


def _target(value: str) -> dict[str, Any]:
    try:
        model, pk = parse_key(value)
    except BadTarget as error:
        raise ValueError(
            _("%(problem)s; expected <app_label>.<model>:<pk>, e.g. tracker.task:42")
            % {"problem": str(error).rstrip(".")}
        ) from None
    # The concrete model's type, as notify() stores it: a proxy's key finds its rows too.
    content_type = ContentType.objects.get_for_model(model)
    return {"target": (content_type.pk, str(pk))}


def _status(value: str) -> dict[str, Any]:
    words = _comma_list(value)
    unknown = [word for word in words if STATUS_ALIASES.get(word, word) not in st.STATUSES]
    if unknown:
        raise ValueError(
            _("unknown status %(unknown)s; expected some of: %(known)s")
            % {"unknown": ", ".join(unknown), "known": ", ".join((*st.STATUSES, "read"))}
        )
    return {"statuses": tuple(dict.fromkeys(STATUS_ALIASES.get(word, word) for word in words))}


def _channel(value: str) -> dict[str, Any]:
    names = _comma_list(value)
    bad = [name for name in names if not CHANNEL_NAME.match(name)]
    if bad:
        raise ValueError(_("%(name)r is not a channel name") % {"name": bad[0]})
    return {"channels": names}


def _comma_list(value: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(item.strip() for item in value.split(",") if item.strip()))
    if len(items) > MAX_LIST_ITEMS:
        raise ValueError(_("give at most %(max)d values") % {"max": MAX_LIST_ITEMS})
    return items


def _sender(value: str) -> dict[str, Any]:
    """A user's pk, user name or email address; an unknown one matches no delivery."""
    user_model = get_user_model()
    matches = Q(**{user_model.USERNAME_FIELD: value})
    email_field = user_model.get_email_field_name()  # "email" even when there is none
    if _is_field(user_model, email_field):
        matches |= Q(**{email_field: value})
    try:
        pk = user_model._meta.pk.to_python(value)  # an int, a UUID...
    except ValidationError:
        pk = None
    if isinstance(pk, int) and not 0 <= pk < 10**18:
        pk = None  # out of any integer column's range
    if pk is not None:
        matches |= Q(pk=pk)
    return {
        "sender_ids": tuple(
            user_model._default_manager.filter(matches).values_list("pk", flat=True)
        )
    }


def _is_field(model: type[Model], name: str) -> bool:
    try:
        model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return True


def _since(value: str) -> dict[str, Any]:
    return {"since": _moment(value, end_of_day=False)}


def _until(value: str) -> dict[str, Any]:
    return {"until": _moment(value, end_of_day=True)}


def _moment(value: str, *, end_of_day: bool) -> dt.datetime:
    """An aware datetime; a bare date is its midnight, or the next one for ``until``.

    ``until`` is inclusive as the user means it: ``until=2024-05-03`` keeps all of
    3 May, ``until=2024-05-03T10:00`` keeps 10:00:00.000000 itself.
    """
    try:
        day = parse_date(value)
        moment = None if day else parse_datetime(value)
    except ValueError:
        moment = day = None
    parsed = moment or day
    if parsed is None:
        raise ValueError(
            _("%(value)r is not a date or time; use ISO 8601, e.g. 2024-05-03 or 2024-05-03T14:30")
            % {"value": value}
        )
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise ValueError(
            _("must be between the years %(min)d and %(max)d") % {"min": MIN_YEAR, "max": MAX_YEAR}
        )
    if moment is None:
        moment = dt.datetime.combine(parsed, dt.time())
        step = dt.timedelta(days=1)
    else:
        step = dt.timedelta(microseconds=1)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment + step if end_of_day else moment


PARSERS = {
    "recipient": _recipient,
    "recipient_prefix": _recipient_prefix,
    "subject": _subject,
    "target": _target,
    "status": _status,
    "channel": _channel,
    "sender": _sender,
    "since": _since,
    "until": _until,
}


def base_queryset() -> QuerySet[Delivery]:
    """Deliveries with what a log row shows, newest first; message bodies are not read."""
    return (
        Delivery.objects.select_related(
            "notification", "notification__content_type", "notification__sender"
        )
        .defer("notification__text", "notification__html")
        .order_by("-created_at", "-pk")
    )


def search(params: Mapping[str, Any], *, extra: Sequence[str] = ()) -> QuerySet[Delivery]:
    """The deliveries ``params`` ask for, newest first (raises :class:`FilterError`)."""
    return parse(params, extra=extra).apply(base_queryset())
