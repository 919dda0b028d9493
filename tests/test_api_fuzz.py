"""Arbitrary JSON thrown at the defer endpoint: never a 500, never a stray job."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs.tokens import issue_token

pytestmark = pytest.mark.django_db

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
task_names = st.sampled_from(
    ["jobs.send_notification", "jobs.build_report", "jobs.delete_sent_notifications", "nope", ""]
)
# Bodies shaped like real requests, with each field possibly wrong, reach deeper code.
request_bodies = st.fixed_dictionaries(
    {"task": task_names | json_values},
    optional={
        "kwargs": st.dictionaries(
            st.sampled_from(["notification_id", "report_id", "x"]) | st.text(),
            json_values,
            max_size=3,
        )
        | json_values,
        "queue": st.sampled_from(["reports", "a b", ""]) | json_values,
        "priority": st.integers() | json_values,
        "schedule_in": st.dictionaries(
            st.sampled_from(["seconds", "days", "eons"]), st.integers() | st.floats(allow_nan=False)
        )
        | json_values,
        "schedule_at": st.sampled_from(["2030-01-01T00:00:00Z", "2030-01-01", "x"]) | json_values,
        "queueing_lock": st.text(max_size=300) | json_values,
        "lock": st.text(max_size=300) | json_values,
    },
)
raw_bodies = st.binary(max_size=300) | json_values.map(lambda value: json.dumps(value).encode())


@pytest.fixture
def raw_token() -> str:
    # Function scope: made inside the test's transaction, shared by its examples.
    _, raw = issue_token(name="fuzz", tasks=["jobs.send_notification", "jobs.build_report"])
    return raw


def post(client: Client, path: str, body: bytes, token: str) -> int:
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
        assert after == before, f"{response.status_code} left a job behind"
    return response.status_code


@pytest.mark.parametrize("path", ["/api/jobs/", "/api/async/jobs/"])
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=request_bodies)
def test_defer__structured_garbage(
    client: Client, raw_token: str, path: str, body: dict[str, Any]
) -> None:
    post(client, path, json.dumps(body).encode(), raw_token)


@pytest.mark.parametrize("path", ["/api/jobs/", "/api/async/jobs/"])
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=raw_bodies)
def test_defer__raw_garbage(client: Client, raw_token: str, path: str, body: bytes) -> None:
    assert post(client, path, body, raw_token) != 201 or body.startswith(b"{")
