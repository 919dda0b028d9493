"""API tokens for machine clients: issued once in clear, stored hashed, limited to tasks;
pausing queues is a capability a token gets only when issued with it.

A token reads `pgj_<key id>_<secret>`. The key id finds the row; the SHA-256 of the whole
token is compared in constant time with the stored hash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from jobs.http_tasks import get_task, is_callable_over_http
from jobs.models import ApiToken

KEY_ID = re.compile(r"[0-9a-f]{1,16}")  # secrets.token_hex; key_id holds 16 characters
# last_used_at is informative; writing it on every request would make each read a write.
LAST_USED_PRECISION = dt.timedelta(minutes=1)


class TokenError(ValueError):
    pass


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def validate_task_names(names: Iterable[str]) -> list[str]:
    cleaned = sorted({name.strip() for name in names if name.strip()})
    if not cleaned:
        raise TokenError("A token must be limited to at least one task.")
    for name in cleaned:
        if get_task(name) is None:
            raise TokenError(f"Unknown task {name!r}.")
        if not is_callable_over_http(name):
            raise TokenError(f"Task {name!r} is not callable over HTTP.")
    return cleaned


def issue_token(
    *,
    name: str,
    tasks: Iterable[str],
    expires_at: dt.datetime | None = None,
    may_pause_queues: bool = False,
) -> tuple[ApiToken, str]:
    """Create a token; return the row and the clear token, which is never stored."""
    name = name.strip()
    if not name:
        raise TokenError("A token needs a name.")
    task_names = validate_task_names(tasks)
    if ApiToken.objects.filter(name=name).exists():
        raise TokenError(f"A token named {name!r} already exists.")
    key_id = secrets.token_hex(6)
    raw = f"{ApiToken.PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        token = ApiToken.objects.create(
            name=name,
            key_id=key_id,
            key_hash=_hash(raw),
            tasks=task_names,
            expires_at=expires_at,
            may_pause_queues=may_pause_queues,
        )
    return token, raw


def _parse(raw: str) -> str | None:
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != ApiToken.PREFIX or not parts[2]:
        return None
    # Only a key id `issue_token` can make reaches the database: a NUL in a header would
    # otherwise fail the query (PostgreSQL's text holds none) with a 500 instead of a 401.
    if not KEY_ID.fullmatch(parts[1]):
        return None
    return parts[1]


def _check(token: ApiToken | None, raw: str) -> ApiToken | None:
    if token is None or not hmac.compare_digest(token.key_hash, _hash(raw)):
        return None
    return token


def _touch(token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)


def authenticate(raw: str) -> ApiToken | None:
    """The active token `raw` stands for, or None."""
    key_id = _parse(raw)
    if key_id is None:
        return None
    token = _check(ApiToken.objects.active().filter(key_id=key_id).first(), raw)
    if token is not None:
        _touch(token)
    return token


async def aauthenticate(raw: str) -> ApiToken | None:
    key_id = _parse(raw)
    if key_id is None:
        return None
    token = _check(await ApiToken.objects.active().filter(key_id=key_id).afirst(), raw)
    if token is not None:
        await sync_to_async(_touch)(token)
    return token
