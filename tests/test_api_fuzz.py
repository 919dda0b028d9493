"""Arbitrary input thrown at the defer endpoint, and what it accepts followed to the end.

Whatever the API refuses must be a 4xx JSON error that leaves no job behind. Whatever it
accepts (201) must be readable by everything that reads jobs later: the status API (sync and
async), the admin's job list and job page, the dashboard, and a real worker process, which
fetches and runs it. A far-past `schedule_at` once passed validation here and then stopped
the worker that fetched it: checking the answer alone is not enough.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procrastinate.contrib.django.models import ProcrastinateJob

from example.models import Notification, Report
from jobs.http_tasks import api_lock, get_task
from jobs.tokens import issue_token
from tests import api_tasks
from tests.api_tasks import API_TASKS

JOBS_URL = "/admin/procrastinate/procrastinatejob/"
DEFER_PATHS = ["/api/jobs/", "/api/async/jobs/"]
# The ids of the rows the example tasks find (created by the round-trip test).
NOTIFICATION_ID = 424_242
REPORT_ID = 434_343

# --- What a client may send ----------------------------------------------------------------

# Text as a client can send it in JSON: any code point, lone surrogates and NUL included,
# and the characters that mean something to the API (":" and "%" in locks).
characters = (
    st.characters()
    | st.characters(categories=["Cs"])
    | st.sampled_from(["\x00", "\n", "\u2028", "\ufeff", "\U0010ffff", ":", "%", "é"])
)
texts = st.text(characters, max_size=20)
# Around the limits of PostgreSQL's int and bigint, and far beyond them (4,000 digits, as
# many as Python's JSON parser takes).
big_ints = st.integers() | st.sampled_from(
    [2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63, -(2**63) - 1, 10**100, -(10**4000)]
)
json_values = st.recursive(
    st.none() | st.booleans() | big_ints | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)
# Every UTC offset Python accepts (up to ±23:59:59.999999), which PostgreSQL does not
# (it stops at ±15:59).
utc_offsets = st.timedeltas(
    min_value=-dt.timedelta(hours=24) + dt.timedelta(microseconds=1),
    max_value=dt.timedelta(hours=24) - dt.timedelta(microseconds=1),
).map(dt.timezone)
# Any time Python can represent, in any offset: far past and far future.
any_time = st.datetimes(timezones=utc_offsets).map(lambda when: when.isoformat())
# The first and last moments Python knows, in offsets that take them past its range once
# converted to UTC (PostgreSQL stores the first one as a date before Christ).
edge_times = st.sampled_from(
    [
        "0001-01-01T00:00:00+14:00",
        "0001-01-01T00:00:00+23:59",
        "0001-01-01T23:59:59.999999+23:59:59.999999",
        "9999-12-31T23:59:59-14:00",
        "9999-12-31T00:00:00-23:59",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
    ]
)
# Times around the accepted window (a day back, JOBS_API_MAX_SCHEDULE_DAYS ahead), computed
# when the example runs.
near_time = st.tuples(
    st.timedeltas(min_value=dt.timedelta(days=-2), max_value=dt.timedelta(days=400)),
    utc_offsets,
).map(lambda pair: (timezone.now() + pair[0]).astimezone(pair[1]).isoformat())
# Offsets written by hand, up to +99:99 (Python refuses ±24:00 and beyond), on the first and
# last days Python knows and on tomorrow.
written_time = st.builds(
    "{}T{:02d}:{:02d}:00{}{:02d}:{:02d}".format,
    st.sampled_from(["0001-01-01", "9999-12-31"])
    | st.builds(lambda: (timezone.now() + dt.timedelta(days=1)).date().isoformat()),
    st.integers(0, 23),
    st.integers(0, 59),
    st.sampled_from(["+", "-"]),
    st.integers(0, 99),
    st.integers(0, 99),
)


def mostly(usual: st.SearchStrategy[Any], *unusual: st.SearchStrategy[Any]) -> Any:
    """`usual` seven times in eight, else one of `unusual`: a request must pass every check
    at once to be accepted, and enough of them must be, to follow them to the worker.
    (`st.one_of` cannot weight: it merges repeated branches.)"""
    others = st.one_of(*unusual)
    return st.integers(0, 7).flatmap(lambda n: usual if n else others)


schedule_in = mostly(
    st.dictionaries(
        st.sampled_from(["weeks", "days", "hours", "minutes", "seconds"]),
        st.integers(0, 50) | st.floats(0, 50),
        min_size=1,
        max_size=3,
    ),
    st.dictionaries(
        st.sampled_from(["weeks", "days", "seconds", "eons"]),
        big_ints | st.floats(allow_nan=False),
        min_size=1,
        max_size=3,
    ),
    json_values,
)


# A task and its arguments: mostly right, so that requests reach the deeper code and get
# accepted. jobs.build_report gets the report that exists only: it retries a failure 10 s
# later, which a one-shot worker would leave waiting.
task_and_kwargs = mostly(
    st.tuples(
        st.sampled_from(["tests.echo", "tests.aecho"]),
        st.fixed_dictionaries({}, optional={"value": json_values}),
    )
    | st.tuples(
        st.just("jobs.send_notification"),
        st.fixed_dictionaries({"notification_id": st.just(NOTIFICATION_ID) | big_ints}),
    )
    | st.tuples(st.just("jobs.build_report"), st.just({"report_id": REPORT_ID})),
    st.tuples(
        st.sampled_from(["jobs.delete_sent_notifications", "nope", ""]) | json_values,
        st.dictionaries(st.sampled_from(["value", "report_id"]) | texts, json_values, max_size=3)
        | json_values,
    ),
)
# Text a lock may hold: any code point but surrogates and control characters.
lock_texts = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40)
OPTIONS = {
    "queue": mostly(
        st.from_regex(r"[A-Za-z0-9_.:\-]{1,128}", fullmatch=True),
        st.sampled_from(["a b", "", "x" * 129, "reports\n"]),
        texts,
        json_values,
    ),
    "priority": mostly(st.integers(-(2**31), 0) | st.integers(-10, 0), big_ints, json_values),
    "queueing_lock": mostly(
        lock_texts, texts, st.text(characters, min_size=250, max_size=260), json_values
    ),
    "lock": mostly(lock_texts, texts, json_values),
}
SCHEDULES = {
    "schedule_in": schedule_in,
    # Half the time around the accepted window, half anywhere.
    "schedule_at": st.one_of(
        near_time,
        st.one_of(
            any_time,
            edge_times,
            written_time,
            st.sampled_from(["Z", "2030-01-01", "x", ""]) | json_values,
        ),
    ),
}


@st.composite
def request_bodies(draw: st.DrawFn) -> dict[str, Any]:
    task, kwargs = draw(task_and_kwargs)
    body = {"task": task}
    if kwargs or draw(st.booleans()):
        body["kwargs"] = kwargs
    for name, strategy in OPTIONS.items():
        if draw(st.booleans()):
            body[name] = draw(strategy)
    # Mostly one of the two ways to schedule, now and then both (refused) or none.
    for name in draw(
        st.sampled_from([[], ["schedule_in"], ["schedule_at"], ["schedule_at"]])
        | st.just(list(SCHEDULES))
    ):
        body[name] = draw(SCHEDULES[name])
    return body


raw_bodies = st.binary(max_size=300) | json_values.map(lambda value: json.dumps(value).encode())


# --- Following what was accepted -----------------------------------------------------------


@dataclass
class Accepted:
    job_id: int
    body: dict[str, Any]


def post(client: Client, path: str, body: bytes, token: str) -> Any:
    """POST `body`; check that the answer is JSON, never a 5xx, and that a job row was
    written if and only if it is a 201."""
    before = ProcrastinateJob.objects.count()
    response = client.post(
        path,
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    after = ProcrastinateJob.objects.count()
    assert response.status_code < 500, response.content
    assert response["Content-Type"] == "application/json"
    if response.status_code == 201:
        assert after == before + 1
    else:
        assert 400 <= response.status_code < 500
        assert response.json()["error"]
        assert after == before, f"{response.status_code} left a job behind"
    return response


def same_json(sent: Any, got: Any) -> bool:
    """Whether `got` is `sent` after a trip through jsonb, which keeps numbers as decimals
    (a float with an integral value can come back as an int)."""
    if isinstance(sent, bool) or isinstance(got, bool):
        return type(sent) is type(got) and sent == got
    if isinstance(sent, float) or isinstance(got, float):
        return isinstance(got, int | float) and float(sent) == float(got)
    if isinstance(sent, dict):
        return (
            isinstance(got, dict)
            and sent.keys() == got.keys()
            and all(same_json(sent[key], got[key]) for key in sent)
        )
    if isinstance(sent, list):
        return (
            isinstance(got, list)
            and len(sent) == len(got)
            and all(same_json(a, b) for a, b in zip(sent, got, strict=True))
        )
    return type(sent) is type(got) and sent == got


def read_status(client: Client, job_id: int, token: str) -> dict[str, Any]:
    """The job's status from the sync and the async status API, which must agree."""
    statuses = []
    for prefix in ("/api", "/api/async"):
        response = client.get(
            f"{prefix}/jobs/{job_id}/", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200, response.content
        statuses.append(response.json())
    assert statuses[0] == statuses[1]
    return dict(statuses[0])


def check_status_matches_request(status: dict[str, Any], body: dict[str, Any]) -> None:
    task = get_task(body["task"])
    assert task is not None
    assert status["task"] == task.name
    assert status["queue"] == (body.get("queue") or task.queue)
    priority = body.get("priority")  # null is the same as absent
    assert status["priority"] == (task.priority if priority is None else priority)
    for lock_field in ("lock", "queueing_lock"):
        sent = body.get(lock_field)
        expected = api_lock(task.name, sent) if sent is not None else getattr(task, lock_field)
        assert status[lock_field] == expected
    scheduled = parse_datetime(status["scheduled_at"]) if status["scheduled_at"] else None
    if body.get("schedule_at") is not None:
        asked = parse_datetime(body["schedule_at"])
        assert asked is not None
        assert scheduled is not None
        # The status API writes times to the millisecond.
        assert abs(scheduled - asked) < dt.timedelta(milliseconds=1)
    elif body.get("schedule_in") is not None:
        assert scheduled is not None
        assert scheduled - timezone.now() <= dt.timedelta(**body["schedule_in"])


def check_admin_list_reads(admin_client: Client, job_id: int) -> None:
    listing = admin_client.get(JOBS_URL)  # newest first: the job is on the first page
    assert listing.status_code == 200
    assert f"{JOBS_URL}{job_id}/change/" in listing.content.decode()


def check_dashboard_reads(admin_client: Client) -> None:
    for path in ("/dashboard/", "/dashboard/panels/", "/dashboard/data/"):
        assert admin_client.get(path).status_code == 200, path


def make_due(job_ids: list[int]) -> None:
    # A worker fetches only jobs that are due, and a job may be scheduled up to
    # JOBS_API_MAX_SCHEDULE_DAYS ahead: the test moves those to now. (Test infrastructure,
    # not application code: procrastinate's API reschedules only failed jobs. The time as
    # stored has been read back above by every other reader.)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_jobs SET scheduled_at = now() "
            "WHERE id = ANY(%s) AND scheduled_at > now()",
            [job_ids],
        )


@pytest.mark.django_db(transaction=True)
def test_defer__accepted_requests_are_read_and_run_everywhere(
    client: Client, admin_client: Client, run_worker: Callable[..., Any]
) -> None:
    _, token = issue_token(
        name="fuzz",
        tasks=[
            "jobs.send_notification",
            "jobs.build_report",
            api_tasks.echo.name,
            api_tasks.aecho.name,
        ],
    )
    Notification.objects.create(id=NOTIFICATION_ID, recipient="a@example.com", subject="Hi")
    now = timezone.now()
    Report.objects.create(id=REPORT_ID, title="All", period_start=now, period_end=now)
    accepted: list[Accepted] = []

    @settings(max_examples=400, deadline=None)
    @given(body=request_bodies(), path=st.sampled_from(DEFER_PATHS))
    def defer(body: dict[str, Any], path: str) -> None:
        response = post(client, path, json.dumps(body).encode(), token)
        if response.status_code != 201:
            return
        job_id = response.json()["id"]
        check_status_matches_request(read_status(client, job_id, token), body)
        check_admin_list_reads(admin_client, job_id)
        accepted.append(Accepted(job_id=job_id, body=body))

    defer()
    assert len(accepted) >= 50, "too few accepted requests to say much"
    check_dashboard_reads(admin_client)

    job_ids = [job.job_id for job in accepted]
    make_due(job_ids)
    run_worker(**API_TASKS)

    for job in accepted:
        status = read_status(client, job.job_id, token)
        assert status["status"] in {"succeeded", "failed"}, status
        assert status["last_attempt"] == 1
        if job.body["task"] in {api_tasks.echo.name, api_tasks.aecho.name}:
            assert status["status"] == "succeeded", status
            assert same_json(job.body.get("kwargs", {}).get("value"), status["result"])
        # The job's page, with its arguments, times, locks and now its outcome.
        assert admin_client.get(f"{JOBS_URL}{job.job_id}/change/").status_code == 200
    assert admin_client.get(JOBS_URL).status_code == 200
    check_dashboard_reads(admin_client)


@pytest.fixture
def raw_token() -> str:
    # Function scope: made inside the test's transaction, shared by its examples.
    _, raw = issue_token(name="fuzz", tasks=["jobs.send_notification", "jobs.build_report"])
    return raw


@pytest.mark.django_db
@pytest.mark.parametrize("path", DEFER_PATHS)
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=raw_bodies)
def test_defer__raw_garbage(client: Client, raw_token: str, path: str, body: bytes) -> None:
    assert post(client, path, body, raw_token).status_code != 201 or body.startswith(b"{")
