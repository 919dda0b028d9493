"""The batches' admin (jobs/admin/batches.py), through Django's test client against real
batches (jobs.workflows) run by real workers, and a batch's page in Chromium."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from procrastinate.contrib.django import app
from procrastinate.contrib.django.models import ProcrastinateJob
from procrastinate.jobs import Status

from jobs import workflows
from jobs.admin.batches import ACTION_LIMIT, JOBS_PER_PAGE, STATES
from jobs.models import Batch
from jobs.testing import wait_until
from tests import workflow_tasks as wt

LIST_URL = "/admin/jobs/batch/"
# The change form's actions post their name under this prefix (Django's ActionLocation).
PAGE_ACTION = "CHANGE_FORM-action"


def page_url(batch: Batch | int) -> str:
    pk = batch if isinstance(batch, int) else batch.pk
    return f"/admin/jobs/batch/{pk}/change/"


def job_url(job_id: int) -> str:
    return f"/admin/procrastinate/procrastinatejob/{job_id}/change/"


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def job_ids(batch: Batch) -> list[int]:
    return list(batch.memberships.order_by("job_id").values_list("job_id", flat=True))


def counts_shown(page: str) -> dict[str, int]:
    return {name: int(n) for name, n in re.findall(r'data-count="(\w+)">(\d+)<', page)}


def client_with(*codenames: str, username: str = "ops") -> Client:
    """A logged-in staff user with these permissions ("app.codename")."""
    user = User.objects.create_user(username, password="pw-for-tests", is_staff=True)
    for name in codenames:
        app_label, codename = name.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


VIEW = ("jobs.view_batch", "procrastinate.view_procrastinatejob")


@pytest.fixture
def batch_viewer(db: None) -> Client:
    """Staff who may view batches and jobs, and change nothing."""
    return client_with(*VIEW, username="viewer")


@pytest.fixture
def batch_operator(db: None) -> Client:
    """Staff who may view batches and jobs and act on batches."""
    return client_with(*VIEW, "jobs.change_batch", username="operator")


def start_one(queue: str = "tests") -> int:
    """Fetch the next job of `queue` as a worker would: it is running (doing) until it is
    finished by hand."""
    manager = app.job_manager
    worker_id = async_to_sync(manager.register_worker)()
    job = async_to_sync(manager.fetch_job)(queues=[queue], worker_id=worker_id)
    assert job is not None
    assert job.id is not None
    return job.id


def finish(job_id: int, status: Status) -> None:
    async_to_sync(app.job_manager.finish_job_by_id_async)(job_id, status=status, delete_job=False)


def post_list_action(client: Client, action: str, *batches: Batch, **extra: str) -> Any:
    data: dict[str, Any] = {"action": action, "_selected_action": [b.pk for b in batches]}
    data.update(extra)
    return client.post(LIST_URL, data, follow=True)


def post_page_action(client: Client, action: str, batch: Batch) -> Any:
    return client.post(
        page_url(batch), {PAGE_ACTION: action, "_selected_action": batch.pk}, follow=True
    )


# --- The list -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_batch_list__shows_running_finished_and_chain_batches(
    run_worker: Callable[..., Any], batch_viewer: Client
) -> None:
    finished = workflows.defer_batch(
        [*(workflows.job(wt.double, n=n) for n in range(3)), workflows.job(wt.fail, n=9)],
        description="Import of 4 rows",
    )
    chain = workflows.defer_chain(
        [workflows.job(wt.add, n=1), workflows.job(wt.add, n=10).result_as("previous")],
        description="Charge then ship",
    )
    run_worker()
    running = workflows.defer_batch(
        [workflows.job(wt.double, n=n) for n in range(5)], description="Report pages"
    )

    response = batch_viewer.get(LIST_URL)

    assert response.status_code == 200
    assert [b.pk for b in response.context["cl"].result_list] == [
        running.pk,
        chain.pk,
        finished.pk,
    ]
    page = response.content.decode()
    rows = {
        pk: next(row for row in page.split("<tr") if page_url(pk) in row)
        for pk in (finished.pk, chain.pk, running.pk)
    }
    assert "3 batches" in page  # counted up to a cap (jobs.job_list.CappedPaginator)
    assert "jobs-status-failed" in rows[finished.pk]
    assert "4/4" in rows[finished.pk]
    assert "3 succeeded · 1 failed · 0 cancelled" in rows[finished.pk]
    assert "jobs-status-succeeded" in rows[chain.pk]
    assert "2/2" in rows[chain.pk]
    assert "Chain" in rows[chain.pk]
    assert "jobs-status-running" in rows[running.pk]
    assert "0/5" in rows[running.pk]
    assert "Report pages" in rows[running.pk]
    # Batches are made by code: no add button, and no delete action.
    assert "/admin/jobs/batch/add/" not in page
    assert "delete_selected" not in page


def make_rows() -> dict[str, list[Batch]]:
    """Batch rows in every state, by what `workflows.batch_state` says of them (counts as
    the trigger leaves them; no job behind them)."""
    now = timezone.now()
    made = [
        Batch.objects.create(description="open", total=3, pending=2, succeeded=1),
        Batch.objects.create(description="all good", total=2, succeeded=2, finished_at=now),
        Batch.objects.create(
            description="one bad", total=3, succeeded=1, failed=1, cancelled=1, finished_at=now
        ),
        Batch.objects.create(
            description="stopped", total=2, succeeded=1, cancelled=1, finished_at=now
        ),
        # A chain that stopped at its second step of three (the third never started).
        Batch.objects.create(
            kind=Batch.Kind.CHAIN,
            description="chain stopped",
            total=3,
            succeeded=1,
            failed=1,
            finished_at=now,
        ),
        Batch.objects.create(
            kind=Batch.Kind.CHAIN, description="chain done", total=1, succeeded=1, finished_at=now
        ),
    ]
    by_state: dict[str, list[Batch]] = {state: [] for state in STATES}
    for batch in made:
        by_state[workflows.batch_state(batch)].append(batch)
    return by_state


@pytest.mark.django_db
def test_batch_list__state_filter_agrees_with_batch_state(batch_viewer: Client) -> None:
    by_state = make_rows()
    assert all(by_state.values())  # every state has a batch

    for state, batches in by_state.items():
        response = batch_viewer.get(f"{LIST_URL}?state={state}")
        assert response.status_code == 200
        listed = {b.pk for b in response.context["cl"].result_list}
        assert listed == {b.pk for b in batches}, state


@pytest.mark.django_db
def test_batch_list__filters_by_kind_and_searches_description_and_id(
    batch_viewer: Client,
) -> None:
    by_state = make_rows()
    everything = [b for batches in by_state.values() for b in batches]
    chains = {b.pk for b in everything if b.kind == Batch.Kind.CHAIN}
    stopped = next(b for b in everything if b.description == "stopped")

    def listed(query: str) -> set[int]:
        response = batch_viewer.get(LIST_URL + query)
        assert response.status_code == 200
        return {b.pk for b in response.context["cl"].result_list}

    assert listed("?kind__exact=chain") == chains
    assert listed("?kind__exact=chain&state=failed") == {
        b.pk for b in by_state["failed"] if b.kind == "chain"
    }
    assert listed("?q=CHAIN") == chains
    assert listed(f"?q={stopped.pk}") == {stopped.pk}
    assert listed(f"?q=%23{stopped.pk}") == {stopped.pk}
    assert listed("?q=99999999999999999999999") == set()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "said"),
    [
        ("?state=lost", "'lost' is not a state of a batch"),
        ("?total__gt=1", "is not a filter of this list"),
        ("?q=%00", "Null characters are not allowed."),
        ("?kind__exact=nope", None),
        ("?p=x", None),
        ("?o=9", None),
    ],
)
def test_batch_list__answers_bad_parameters_without_a_server_error(
    batch_viewer: Client, query: str, said: str | None
) -> None:
    make_rows()

    response = batch_viewer.get(LIST_URL + query, follow=True)

    assert response.status_code == 200
    if said is not None:
        assert any(said in message for message in messages_of(response)), messages_of(response)


@pytest.mark.django_db
def test_batch_list__reads_as_many_rows_in_as_many_queries(batch_viewer: Client) -> None:
    def queries_for_the_list() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert batch_viewer.get(LIST_URL).status_code == 200
        return len(queries)

    make_rows()
    few = queries_for_the_list()
    for _ in range(5):
        make_rows()

    assert queries_for_the_list() == few


@pytest.mark.django_db
def test_batch_admin__needs_the_view_permission(client: Client) -> None:
    (batch,) = make_rows()["running"]
    jobs_only = client_with("procrastinate.view_procrastinatejob")

    assert client.get(LIST_URL)["Location"].startswith("/admin/login/")
    assert jobs_only.get(LIST_URL).status_code == 403
    assert jobs_only.get(page_url(batch)).status_code == 403


# --- A batch's page -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_batch_page__finished_batch_shows_counts_callbacks_and_linked_jobs(
    run_worker: Callable[..., Any], batch_viewer: Client
) -> None:
    batch = workflows.defer_batch(
        [workflows.job(wt.double, n=n) for n in range(3)] + [workflows.job(wt.fail, n=7)],
        on_success=workflows.job(wt.callback, tag="success"),
        on_finish=workflows.job(wt.callback, tag="finish"),
        on_failure=workflows.job(wt.callback, tag="failure"),
        description="Import",
        properties={"import_id": 7, "rows": ["a", "b"]},
    )
    run_worker()
    batch.refresh_from_db()

    response = batch_viewer.get(page_url(batch))

    assert response.status_code == 200
    page = response.content.decode()
    assert counts_shown(page) == {
        "total": 4,
        "waiting": 0,
        "running": 0,
        "succeeded": 3,
        "failed": 1,
        "cancelled": 0,
    }
    # Each job, linked to its page, with its return value or its error.
    for job_id in job_ids(batch):
        assert f'href="{job_url(job_id)}"' in page
    rows = {int(i): row for i, row in re.findall(r'<tr data-job="(\d+)">(.*?)</tr>', page, re.S)}
    value = re.compile(r'<code class="jobs-batch-value">(.*?)</code>')
    values = sorted(html.unescape(m) for row in rows.values() for m in value.findall(row))
    assert values == ["0", "2", "4"]
    assert "ValueError: job 7 fails" in html.unescape(page)
    # The callbacks that ran, linked; on_success did not apply.
    assert batch.on_finish_job_id is not None
    assert batch.on_failure_job_id is not None
    assert batch.on_success_job_id is None
    callbacks = page.split('id="batch-callbacks"')[1].split("</fieldset>")[0]
    assert f'href="{job_url(batch.on_finish_job_id)}"' in callbacks
    assert f'href="{job_url(batch.on_failure_job_id)}"' in callbacks
    assert "not deferred: it did not apply" in callbacks
    # The properties, as indented JSON.
    assert '"import_id": 7' in html.unescape(page)
    assert '"rows": [\n    "a",' in html.unescape(page)
    # Read-only: no form field, no save or delete button.
    assert 'name="description"' not in page
    assert 'name="_save"' not in page
    assert "/delete/" not in page


@pytest.mark.django_db(transaction=True)
def test_batch_page__chain_shows_steps_and_the_steps_never_started(
    run_worker: Callable[..., Any], batch_viewer: Client
) -> None:
    chain = workflows.defer_chain(
        [
            workflows.job(wt.add, n=1),
            workflows.job(wt.fail, n=2),
            workflows.job(wt.add, n=3).result_as("previous"),
        ],
        on_failure=workflows.job(wt.callback, tag="failed"),
        description="Charge, ship, mail",
    )
    run_worker()
    chain.refresh_from_db()

    page = batch_viewer.get(page_url(chain)).content.decode()

    assert counts_shown(page) == {
        "total": 3,
        "waiting": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 0,
        "not_started": 1,
    }
    steps = page.split('id="batch-steps"')[1].split("</fieldset>")[0]
    first, second = job_ids(chain)
    rows = steps.split("<tr>")[2:]
    assert f'href="{job_url(first)}"' in rows[0]
    assert "jobs-status-succeeded" in rows[0]
    assert f'href="{job_url(second)}"' in rows[1]
    assert "jobs-status-failed" in rows[1]
    assert "not started" in rows[2]
    assert "<code>previous</code>" in rows[2]
    assert "ValueError: job 2 fails" in html.unescape(page)
    assert f'href="{job_url(chain.on_failure_job_id or 0)}"' in page


@pytest.mark.django_db(transaction=True)
def test_batch_page__running_batch_with_a_deleted_job(batch_viewer: Client) -> None:
    batch = workflows.defer_batch(
        [workflows.job(wt.double, n=n) for n in range(3)],
        on_finish=workflows.job(wt.callback, tag="finish"),
    )
    first, second, third = job_ids(batch)
    start_one()  # the first: running
    # Deleted before it ended (by hand): counted as cancelled, listed as deleted.
    assert app.job_manager.cancel_job_by_id(third, delete_job=True)

    page = batch_viewer.get(page_url(batch)).content.decode()

    assert counts_shown(page) == {
        "total": 3,
        "waiting": 1,
        "running": 1,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 1,
    }
    rows = {int(i): row for i, row in re.findall(r'<tr data-job="(\d+)">(.*?)</tr>', page, re.S)}
    assert "jobs-status-doing" in rows[first]
    assert f'href="{job_url(first)}"' in rows[first]
    assert "jobs-status-todo" in rows[second]
    assert "deleted" in rows[third]
    assert "counted as cancelled" in rows[third]
    assert "href" not in rows[third]
    assert "deferred when the batch ends" in page


@pytest.mark.django_db(transaction=True)
def test_batch_page__without_the_job_permission_shows_no_job_links_or_values(
    run_worker: Callable[..., Any],
) -> None:
    batch = workflows.defer_batch(
        [workflows.job(wt.double, n=21), workflows.job(wt.fail, n=5)],
        on_finish=workflows.job(wt.callback, tag="finish"),
    )
    run_worker()
    batches_only = client_with("jobs.view_batch")

    response = batches_only.get(page_url(batch))

    assert response.status_code == 200
    page = response.content.decode()
    assert "procrastinatejob" not in page
    assert "job 5 fails" not in page
    assert ">42<" not in page
    assert "need the permission to view jobs" in page
    assert counts_shown(page)["succeeded"] == 1
    assert all(f"#{job_id}" in page for job_id in job_ids(batch))


@pytest.mark.django_db
def test_batch_page__pages_the_jobs(batch_viewer: Client) -> None:
    batch = workflows.defer_batch(
        [workflows.job(wt.double, n=n) for n in range(2 * JOBS_PER_PAGE + 10)]
    )
    ids = job_ids(batch)

    def shown(query: str) -> tuple[list[int], str]:
        response = batch_viewer.get(page_url(batch) + query)
        assert response.status_code == 200
        page = response.content.decode()
        return [int(i) for i in re.findall(r'<tr data-job="(\d+)">', page)], page

    first, page = shown("")
    assert first == ids[:JOBS_PER_PAGE]
    assert "Page 1 of 3" in page
    assert "?page=2#batch-jobs" in page
    second, page = shown("?page=2")
    assert second == ids[JOBS_PER_PAGE : 2 * JOBS_PER_PAGE]
    assert all(f'href="{job_url(job_id)}"' in page for job_id in second)
    assert "?page=1#batch-jobs" in page
    assert "?page=3#batch-jobs" in page
    last, page = shown("?page=3")
    assert last == ids[2 * JOBS_PER_PAGE :]
    assert "?page=4" not in page


@pytest.mark.django_db
def test_batch_page__reads_a_page_of_jobs_in_as_many_queries_as_a_few(
    batch_viewer: Client,
) -> None:
    def queries_for(batch: Batch) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert batch_viewer.get(page_url(batch)).status_code == 200
        return len(queries)

    few = workflows.defer_batch(
        [workflows.job(wt.double, n=n) for n in range(2)],
        on_finish=workflows.job(wt.callback, tag="finish"),
    )
    many = workflows.defer_batch(
        [workflows.job(wt.double, n=n) for n in range(JOBS_PER_PAGE + 5)],
        on_finish=workflows.job(wt.callback, tag="finish"),
    )

    queries_for(few)  # the first page a process shows also reads content types once

    assert queries_for(many) == queries_for(few)


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["0", "3", "x", "²", "-1", "9" * 50, ""])
def test_batch_page__a_bad_page_number_shows_the_first_with_a_message(
    batch_viewer: Client, page: str
) -> None:
    batch = workflows.defer_batch([workflows.job(wt.double, n=n) for n in range(150)])

    response = batch_viewer.get(page_url(batch), {"page": page})

    assert response.status_code == 200
    shown = re.findall(r'<tr data-job="(\d+)">', response.content.decode())
    assert [int(i) for i in shown] == job_ids(batch)[:JOBS_PER_PAGE]
    (message,) = messages_of(response)
    assert "the first is shown" in message


@pytest.mark.django_db
@pytest.mark.parametrize("object_id", ["123456789", "abc", "9" * 30, "%C2%B2", "-1"])
def test_batch_page__unknown_ids_go_back_to_the_list_with_a_message(
    batch_viewer: Client, object_id: str
) -> None:
    response = batch_viewer.get(f"/admin/jobs/batch/{object_id}/change/", follow=True)

    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == "/admin/"  # Django's answer to a missing row
    assert any("doesn\u2019t exist" in message for message in messages_of(response))


@pytest.mark.django_db
def test_batch_page__refuses_changes_and_deletion(admin_client: Client) -> None:
    batch = workflows.defer_batch([workflows.job(wt.double, n=1)], description="Kept")

    response = admin_client.post(page_url(batch), {"description": "Changed", "_save": "Save"})

    assert response.status_code == 403
    assert admin_client.post(f"/admin/jobs/batch/{batch.pk}/delete/").status_code == 403
    assert admin_client.get("/admin/jobs/batch/add/").status_code == 403
    batch.refresh_from_db()
    assert batch.description == "Kept"


# --- Actions ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["list", "page"])
def test_cancel_rest__cancels_waiting_jobs_and_asks_running_ones_to_stop(
    batch_operator: Client, where: str
) -> None:
    batch = workflows.defer_batch(
        [workflows.job(wt.double, n=n) for n in range(3)],
        on_finish=workflows.job(wt.callback, tag="finish"),
    )
    running = start_one()
    other = workflows.defer_batch([workflows.job(wt.double, n=9)])

    if where == "list":
        response = post_list_action(batch_operator, "cancel_rest", batch)
    else:
        response = post_page_action(batch_operator, "cancel_rest", batch)

    assert response.status_code == 200
    (message,) = messages_of(response)
    assert "Cancelled 2 waiting jobs and asked 1 running job to stop, in 1 batch." in message
    batch.refresh_from_db()
    assert (batch.pending, batch.cancelled, batch.finished_at) == (1, 2, None)
    assert ProcrastinateJob.objects.get(id=running).abort_requested
    assert LogEntry.objects.filter(object_id=str(batch.pk)).count() == 1
    # The running job stops (as a task that checks for an abort does): the batch ends,
    # cancelled, and its callback is deferred.
    finish(running, Status.ABORTED)
    batch.refresh_from_db()
    assert (batch.pending, batch.cancelled, batch.finished_at is not None) == (0, 3, True)
    assert workflows.batch_state(batch) == "cancelled"
    assert batch.on_finish_job_id is not None
    page = batch_operator.get(page_url(batch)).content.decode()
    assert counts_shown(page)["cancelled"] == 3
    # The other batch was not touched.
    assert ProcrastinateJob.objects.get(id=job_ids(other)[0]).status == "todo"


@pytest.mark.django_db(transaction=True)
def test_cancel_rest__on_a_finished_batch_says_there_is_nothing_to_cancel(
    batch_operator: Client,
) -> None:
    batch = workflows.defer_batch([workflows.job(wt.double, n=1)])
    finish(start_one(), Status.SUCCEEDED)

    response = post_page_action(batch_operator, "cancel_rest", batch)

    assert messages_of(response) == [
        "Nothing to cancel: no job of the 1 batch is waiting or running."
    ]
    batch.refresh_from_db()
    assert workflows.batch_state(batch) == "succeeded"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["list", "page"])
def test_retry_failed__reopens_the_batch_until_the_retried_jobs_end(
    run_worker: Callable[..., Any], batch_operator: Client, where: str
) -> None:
    batch = workflows.defer_batch(
        [workflows.job(wt.fail, n=1), workflows.job(wt.fail, n=2), workflows.job(wt.double, n=3)],
        on_finish=workflows.job(wt.callback, tag="finish"),
    )
    run_worker()
    batch.refresh_from_db()
    assert (batch.failed, batch.succeeded, batch.finished_at is not None) == (2, 1, True)
    first_callback = batch.on_finish_job_id

    if where == "list":
        response = post_list_action(batch_operator, "retry_failed", batch)
    else:
        response = post_page_action(batch_operator, "retry_failed", batch)

    (message,) = messages_of(response)
    assert message.startswith("Retried 2 failed jobs of 1 batch.")
    batch.refresh_from_db()
    assert (batch.pending, batch.failed, batch.finished_at) == (2, 0, None)
    assert workflows.batch_state(batch) == "running"
    page = batch_operator.get(page_url(batch)).content.decode()
    assert counts_shown(page)["waiting"] == 2
    # They fail again: the batch ends again, its callback is not deferred twice.
    run_worker()
    batch.refresh_from_db()
    assert (batch.failed, batch.finished_at is not None) == (2, True)
    assert batch.on_finish_job_id == first_callback


@pytest.mark.django_db
def test_batch_actions__refused_without_the_change_permission(batch_viewer: Client) -> None:
    batch = workflows.defer_batch([workflows.job(wt.double, n=n) for n in range(2)])

    page = batch_viewer.get(page_url(batch)).content.decode()
    assert "Cancel the rest" not in page
    assert "Retry failed jobs" not in page
    assert PAGE_ACTION not in page
    listed = batch_viewer.get(LIST_URL).content.decode()
    assert "cancel_rest" not in listed
    assert "retry_failed" not in listed

    for action in ("cancel_rest", "retry_failed"):
        post_list_action(batch_viewer, action, batch)
        assert (
            batch_viewer.post(
                page_url(batch), {PAGE_ACTION: action, "_selected_action": batch.pk}
            ).status_code
            == 403
        )

    assert set(ProcrastinateJob.objects.values_list("status", flat=True)) == {"todo"}
    assert not LogEntry.objects.exists()


@pytest.mark.django_db
def test_batch_actions__buttons_for_those_allowed(batch_operator: Client) -> None:
    batch = workflows.defer_batch([workflows.job(wt.double, n=1)])

    page = batch_operator.get(page_url(batch)).content.decode()

    assert f'<button type="submit" class="button" name="{PAGE_ACTION}" value="cancel_rest">' in page
    assert f'name="{PAGE_ACTION}" value="retry_failed">Retry failed jobs</button>' in page
    assert 'name="csrfmiddlewaretoken"' in page
    assert f'name="_selected_action" value="{batch.pk}"' in page


@pytest.mark.django_db
def test_batch_actions__refuse_too_many_batches_and_bad_selections(
    batch_operator: Client,
) -> None:
    Batch.objects.bulk_create(Batch(description=f"b{n}") for n in range(ACTION_LIMIT + 1))
    batch = Batch.objects.order_by("pk").first()
    assert batch is not None

    response = post_list_action(batch_operator, "cancel_rest", batch, select_across="1")
    assert messages_of(response) == [
        f"Nothing was done: these actions take at most {ACTION_LIMIT} batches at once."
    ]
    response = batch_operator.post(
        LIST_URL, {"action": "retry_failed", "_selected_action": ["x"]}, follow=True
    )
    assert response.status_code == 200
    assert "is not the id of a row of this list" in messages_of(response)[0]
    # The page's buttons act on the page's batch only.
    other = Batch.objects.order_by("pk").last()
    assert other is not None
    response = batch_operator.post(
        page_url(batch), {PAGE_ACTION: "cancel_rest", "_selected_action": other.pk}
    )
    assert response.status_code == 400
    assert not LogEntry.objects.exists()


# --- In a browser ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_batch_page__counts_and_job_links_in_chromium(
    browser: Any, site_server: Callable[..., str], run_worker: Callable[..., Any]
) -> None:
    from selenium.webdriver.common.by import By

    User.objects.create_superuser("boss", password="pw-for-tests")
    batch = workflows.defer_batch(
        [workflows.job(wt.double, n=n) for n in range(3)] + [workflows.job(wt.fail, n=3)],
        description="Nightly import",
    )
    run_worker()
    url = site_server()

    browser.get(f"{url}/admin/login/?next={page_url(batch)}")
    browser.find_element(By.NAME, "username").send_keys("boss")
    browser.find_element(By.NAME, "password").send_keys("pw-for-tests")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

    # The URL changes as the redirect starts: wait for the page itself.
    counts = wait_until(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#batch-counts td[data-count]"),
        timeout=15,
        what="the batch's counts",
    )
    shown = {cell.get_attribute("data-count"): cell.text for cell in counts}
    assert shown == {
        "total": "4",
        "waiting": "0",
        "running": "0",
        "succeeded": "3",
        "failed": "1",
        "cancelled": "0",
    }
    links = browser.find_elements(By.CSS_SELECTOR, "#batch-jobs a[href*='procrastinatejob']")
    assert sorted(link.get_attribute("href") for link in links) == sorted(
        f"{url}{job_url(job_id)}" for job_id in job_ids(batch)
    )
    assert browser.find_element(By.CSS_SELECTOR, "button[value=retry_failed]").is_displayed()
    artifacts = Path(settings.BASE_DIR) / "artifacts"
    artifacts.mkdir(exist_ok=True)
    browser.save_screenshot(str(artifacts / "batch-page.png"))
    assert [
        entry
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "/favicon.ico" not in entry["message"]
    ] == []

    # A job's link opens its page.
    links[0].click()
    wait_until(lambda: "/procrastinatejob/" in browser.current_url, timeout=15)
