"""Naming a target in URLs: ``<app_label>.<model>`` plus its pk, e.g. ``tracker.comment:42``.

Used by the REST API, the badge fragment and the PNG badge. Resolving many targets
costs one query per model, not one per target.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext as _


class BadTarget(ValueError):
    """A target name that is malformed, of an unknown model, or with an invalid pk."""


def type_of(target: models.Model) -> str:
    """``<app_label>.<model>`` of a target, as in the status URLs."""
    return f"{target._meta.app_label}.{target._meta.model_name}"


def key_of(target: models.Model) -> str:
    """``<app_label>.<model>:<pk>``, the name of a target in ``?targets=``."""
    return f"{type_of(target)}:{target.pk}"


def model_of(target_type: str) -> type[models.Model]:
    """The model named ``<app_label>.<model>``; BadTarget when there is none."""
    app_label, dot, model_name = target_type.partition(".")
    if not dot or not app_label or not model_name:
        raise BadTarget(
            _("%(name)r is not of the form <app_label>.<model>") % {"name": target_type}
        )
    try:
        content_type = ContentType.objects.get_by_natural_key(app_label, model_name.lower())
    except ContentType.DoesNotExist:
        raise BadTarget(_("Unknown target type %(name)r.") % {"name": target_type}) from None
    model = content_type.model_class()
    if model is None:
        raise BadTarget(_("Unknown target type %(name)r.") % {"name": target_type})
    return model


def parse_key(key: str) -> tuple[type[models.Model], object]:
    """The model and the (converted) pk of ``<app_label>.<model>:<pk>``."""
    target_type, colon, pk = key.strip().partition(":")
    if not colon or not pk:
        raise BadTarget(_("%(key)r is not of the form <app_label>.<model>:<pk>") % {"key": key})
    return parse_pk(model_of(target_type), pk)


def parse_pk(model: type[models.Model], pk: str) -> tuple[type[models.Model], object]:
    """``(model, pk)`` with ``pk`` converted to the model's pk type; BadTarget if invalid."""
    value = None
    if "\x00" not in pk:  # no key holds it, and PostgreSQL refuses it in a query
        with contextlib.suppress(ValidationError):
            value = model._meta.pk.to_python(pk)
    if value is None:
        raise BadTarget(
            _("%(pk)r is not a valid key of %(type)s.") % {"pk": pk, "type": type_of_model(model)}
        )
    return model, value


def type_of_model(model: type[models.Model]) -> str:
    return f"{model._meta.app_label}.{model._meta.model_name}"


def fetch(wanted: Iterable[tuple[type[models.Model], object]]) -> list[models.Model]:
    """The existing targets among ``wanted`` (model, pk) pairs, in their order.

    One query per model; missing ones are left out.
    """
    wanted = list(dict.fromkeys(wanted))
    pks_by_model: dict[type[models.Model], list[object]] = defaultdict(list)
    for model, pk in wanted:
        pks_by_model[model].append(pk)
    found: dict[tuple[type[models.Model], object], models.Model] = {}
    for model, pks in pks_by_model.items():
        for target in model._default_manager.filter(pk__in=pks):
            found[(model, target.pk)] = target
    return [found[pair] for pair in wanted if pair in found]
