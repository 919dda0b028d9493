from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.utils import timezone
from procrastinate.contrib.django.exceptions import ReadOnlyModel
from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

from example import tasks
from example.models import Notification
from jobs.admin import jobs as job_admin
from jobs.admin.jobs import JobAdmin
from jobs.job_list import CappedPaginator
from jobs.models import JobResult
from tests.conftest import JobMaker

pytestmark = pytest.mark.django_db

JOBS_URL = "/admin/procrastinate/procrastinatejob/"


@pytest.fixture
def job_id() -> int:
    notification = Notification.objects.create(recipient="a@example.com", subject="Hi")
    return tasks.send_notification.defer(notification_id=notification.pk)


def test_job_list__renders_for_staff(staff_client: Client, job_id: int) -> None:
    response = staff_client.get(JOBS_URL)

    assert response.status_code == 200
    assert b"send_notification" in response.content


def test_job_detail__renders_for_staff_with_events(staff_client: Client, job_id: int) -> None:
    response = staff_client.get(f"{JOBS_URL}{job_id}/change/")

    assert response.status_code == 200
    assert b"notification_id" in response.content
    assert b"deferred" in response.content  # the event inline


@pytest.mark.parametrize("path", [JOBS_URL, "/admin/procrastinate/procrastinateevent/"])
def test_job_admin__redirects_anonymous_users_to_login(client: Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_job_admin__refuses_changes(
    staff_client: Client, admin_client: Client, job_id: int
) -> None:
    before = ProcrastinateJob.objects.values().get(id=job_id)

    for client in (staff_client, admin_client):
        response = client.post(
            f"{JOBS_URL}{job_id}/change/", {"queue_name": "elsewhere", "status": "succeeded"}
        )
        assert response.status_code == 403
        assert client.get(f"{JOBS_URL}add/").status_code == 403
        assert client.post(f"{JOBS_URL}{job_id}/delete/", {"post": "yes"}).status_code == 403

    assert ProcrastinateJob.objects.values().get(id=job_id) == before


def test_job_admin__refuses_users_without_view_permission(client: Client, job_id: int) -> None:
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_user("clerk", password="x", is_staff=True))

    assert client.get(JOBS_URL).status_code == 403


def test_procrastinate_models__refuse_orm_writes(job_id: int) -> None:
    job = ProcrastinateJob.objects.get(id=job_id)

    with pytest.raises(ReadOnlyModel):
        ProcrastinateJob.objects.filter(id=job_id).update(status="succeeded")
    with pytest.raises(ReadOnlyModel):
        job.save()
    with pytest.raises(ReadOnlyModel):
        job.delete()
    with pytest.raises(ReadOnlyModel):
        ProcrastinateEvent.objects.filter(job_id=job_id).delete()

    assert ProcrastinateJob.objects.get(id=job_id).status == "todo"


def test_token_admin__lists_and_validates_task_edits(admin_client: Client) -> None:
    from jobs.models import ApiToken
    from jobs.tokens import issue_token

    token, _ = issue_token(name="ops", tasks=["jobs.build_report"])
    url = f"/admin/jobs/apitoken/{token.pk}/change/"

    assert b"ops" in admin_client.get("/admin/jobs/apitoken/").content
    refused = admin_client.post(
        url, {"tasks": '["jobs.delete_sent_notifications"]', "revoked_at": ""}
    )
    assert refused.status_code == 200
    assert b"not callable over HTTP" in refused.content
    assert ApiToken.objects.get().tasks == ["jobs.build_report"]

    accepted = admin_client.post(url, {"tasks": '["jobs.send_notification"]', "revoked_at": ""})
    assert accepted.status_code == 302
    assert ApiToken.objects.get().tasks == ["jobs.send_notification"]


def test_token_admin__revoke_action(admin_client: Client) -> None:
    from jobs.models import ApiToken
    from jobs.tokens import authenticate, issue_token

    token, raw = issue_token(name="old", tasks=["jobs.build_report"])

    response = admin_client.post(
        "/admin/jobs/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}, follow=True
    )

    assert b"Revoked 1 token(s)." in response.content
    assert ApiToken.objects.get().revoked_at is not None
    assert authenticate(raw) is None


# --- The job and event admin at scale (jobs/admin/, jobs/job_list.py) -------------------

EVENTS_URL = "/admin/procrastinate/procrastinateevent/"


def listed(client: Client, url: str = JOBS_URL, **query: str) -> list[int]:
    response = client.get(url, query)
    assert response.status_code == 200, response
    return [row.pk for row in response.context["cl"].result_list]


@pytest.mark.parametrize("term", ["²", "1" * 5000, str(2**63)])
@pytest.mark.parametrize("url", [JOBS_URL, EVENTS_URL])
def test_job_and_event_search__a_term_of_digits_that_is_no_job_id(
    admin_client: Client, make_job: JobMaker, url: str, term: str
) -> None:
    make_job()

    # "²" passes str.isdigit and fails int(); so do 5,000 digits: both answered 500.
    assert listed(admin_client, url, q=term) == []
    assert admin_client.get(f"{JOBS_URL}{term}/change/").status_code == 302


def test_job_list__filters_and_searches(admin_client: Client, make_job: JobMaker) -> None:
    failed = make_job("failed", task="jobs.build_report", args={"report_id": 7}, lock="report-7")
    waiting = make_job(queueing_lock="notify-a@example.com")
    other = make_job("succeeded", task="legacy.gone", queue="legacy")

    assert listed(admin_client) == [other, waiting, failed]
    assert listed(admin_client, status="failed") == [failed]
    assert listed(admin_client, status="no-such-status") == []
    assert listed(admin_client, queue="reports") == [failed]
    assert listed(admin_client, task="jobs.build_report") == [failed]
    assert listed(admin_client, task="legacy.gone") == [other]
    assert listed(admin_client, q=str(failed)) == [failed]
    assert listed(admin_client, q="build_report") == [failed]
    assert listed(admin_client, q="legacy.gone") == [other]
    assert listed(admin_client, q="report-7") == [failed]
    assert listed(admin_client, q="report-") == []
    assert listed(admin_client, q="report-*") == [failed]
    assert listed(admin_client, q="notify-a@example.com") == [waiting]
    assert listed(admin_client, q="notify-*") == [waiting]
    assert listed(admin_client, q="nothing-like-it") == []
    assert listed(admin_client, q="99999999999999999999999") == []


def test_job_list__filters_by_date_range_of_deferral(
    admin_client: Client, make_job: JobMaker
) -> None:
    job = make_job()

    assert listed(admin_client, deferred_from="-1h") == [job]
    assert listed(admin_client, deferred_to="-1h") == []
    assert listed(admin_client, deferred_from="2000-01-01", deferred_to="2000-01-02") == []
    response = admin_client.get(JOBS_URL, {"deferred_from": "yesterday-ish"})
    assert response.status_code == 302
    assert response["Location"].endswith("?e=1")


def test_job_list__filter_choices_come_from_the_registry_and_the_table(
    admin_client: Client, make_job: JobMaker
) -> None:
    make_job(task="legacy.gone", queue="legacy")

    response = admin_client.get(JOBS_URL)

    filters = {spec.title: spec for spec in response.context["cl"].filter_specs}
    assert [value for value, _ in filters["status"].lookup_choices] == list(
        ProcrastinateJob.STATUSES
    )
    assert {"notifications", "reports", "legacy"} <= {
        value for value, _ in filters["queue"].lookup_choices
    }
    assert {"jobs.build_report", "legacy.gone"} <= {
        value for value, _ in filters["task"].lookup_choices
    }


def test_job_list__counts_at_most_a_few_pages(
    admin_client: Client, make_job: JobMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(5):
        make_job()
    monkeypatch.setattr(JobAdmin, "list_per_page", 2)
    monkeypatch.setattr(CappedPaginator, "max_pages", 2)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE procrastinate_jobs")

    unfiltered = admin_client.get(JOBS_URL)
    filtered = admin_client.get(JOBS_URL, {"status": "todo"})
    narrow = admin_client.get(JOBS_URL, {"status": "failed"})

    assert b"More than 4 procrastinate jobs (about 5 in all)" in unfiltered.content
    assert b"More than 4 procrastinate jobs: filter or search" in filtered.content
    assert b"0 procrastinate jobs" in narrow.content
    assert admin_client.get(JOBS_URL, {"p": "3"}).status_code == 302  # beyond the cap


def test_job_list__query_count_does_not_grow_with_the_page(
    admin_client: Client, make_job: JobMaker, django_assert_max_num_queries: Any
) -> None:
    make_job("failed")
    make_job("succeeded")
    make_job("doing")
    for _ in range(20):
        make_job()

    # Session, user, queue and task choices, the capped count, the page, its events and
    # its results: never one query per row.
    with django_assert_max_num_queries(9):
        response = admin_client.get(JOBS_URL)

    assert len(response.context["cl"].result_list) == 23


def test_job_page__shows_timeline_arguments_and_error(
    admin_client: Client, make_job: JobMaker, django_assert_max_num_queries: Any
) -> None:
    job_id = make_job("failed", args={"notification_id": 42})
    JobResult.objects.create(
        job_id=job_id,
        task_name="jobs.send_notification",
        status=JobResult.Status.FAILED,
        attempt=1,
        worker_name="w1",
        started_at=timezone.now(),
        finished_at=timezone.now(),
        duration=dt.timedelta(seconds=1.5),
        exception_type="smtplib.SMTPServerDisconnected",
        exception_message="Connection unexpectedly closed",
        traceback="Traceback (most recent call last):\n  File 'x.py'\nSMTPServerDisconnected",
    )

    url = f"{JOBS_URL}{job_id}/change/"
    admin_client.get(url)  # Django caches content types on the first page
    # Session, user, the job, its events and its result.
    with django_assert_max_num_queries(5):
        response = admin_client.get(url)

    page = response.content.decode()
    assert "&quot;notification_id&quot;: 42" in page
    for event in ("deferred", "started", "failed"):
        assert f"jobs-status-{event}" in page
    assert "waited " in page
    assert "ran " in page
    assert "smtplib.SMTPServerDisconnected" in page
    assert "Connection unexpectedly closed" in page
    assert "Traceback (most recent call last)" in page
    # Durations read as on the dashboard and in "last event ... ago" (jobs/time_labels.py).
    assert ", 1.5 s" in page  # the timing field: "started ..., finished ..., 1.5 s"
    assert "1.50 s" not in page


def test_job_page__shortens_large_arguments(admin_client: Client, make_job: JobMaker) -> None:
    job_id = make_job(args={"payload": "x" * 300_000})

    response = admin_client.get(f"{JOBS_URL}{job_id}/change/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "Shortened: 20,000 of 300,015 characters shown." in page
    assert len(page) < 100_000
    listing = admin_client.get(JOBS_URL).content.decode()
    assert "xxxxxxxxxx…" in listing
    assert len(listing) < 100_000


def test_job_page__unknown_job_redirects(admin_client: Client) -> None:
    for job_id in ("123456789", "not-a-number"):
        assert admin_client.get(f"{JOBS_URL}{job_id}/change/").status_code == 302


def act(client: Client, action: str, *job_ids: int, **extra: str) -> str:
    response = client.post(
        JOBS_URL, {"action": action, "_selected_action": [str(i) for i in job_ids], **extra}
    )
    assert response.status_code == 302, response.content[:2000]
    return " ".join(str(m) for m in get_messages(response.wsgi_request))


def test_job_actions__retry_failed_jobs(admin_client: Client, make_job: JobMaker) -> None:
    failed = make_job("failed")
    done = make_job("succeeded")

    message = act(admin_client, "retry_failed", failed, done)

    assert message == ("Retried 1 job. Left alone: 1 succeeded (only failed jobs can be retried).")
    assert ProcrastinateJob.objects.get(id=failed).status == "todo"
    assert ProcrastinateJob.objects.get(id=done).status == "succeeded"


def test_job_actions__cancel_jobs_not_started(admin_client: Client, make_job: JobMaker) -> None:
    waiting = [make_job(), make_job()]
    running = make_job("doing")

    message = act(admin_client, "cancel_waiting", *waiting, running)

    assert message.startswith("Cancelled 2 jobs. Left alone: 1 doing")
    assert {ProcrastinateJob.objects.get(id=i).status for i in waiting} == {"cancelled"}
    assert ProcrastinateJob.objects.get(id=running).status == "doing"


def test_job_actions__abort_says_which_jobs_were_cancelled(
    admin_client: Client, make_job: JobMaker
) -> None:
    running = make_job("doing")
    waiting = make_job()
    finished = make_job("succeeded")

    message = act(admin_client, "request_abort", running, waiting, finished)

    assert message == (
        "Aborted 2 jobs. Of those, 1 job had not started and was cancelled. "
        "Left alone: 1 succeeded (only waiting or running jobs can be aborted)."
    )
    # What abort does to each state is tested once, in tests/test_job_actions.py.
    assert ProcrastinateJob.objects.get(id=waiting).status == "cancelled"


def test_job_actions__reschedule_asks_for_a_time_then_moves_jobs(
    admin_client: Client, make_job: JobMaker
) -> None:
    failed = make_job("failed")
    waiting = make_job(args={"notification_id": 9}, queueing_lock="n-9", lock="l-9")
    running = make_job("doing")
    run_at = timezone.now().replace(microsecond=0, second=0) + dt.timedelta(hours=2)

    form = admin_client.post(
        JOBS_URL, {"action": "reschedule", "_selected_action": [failed, waiting, running]}
    )
    assert form.status_code == 200
    assert b'name="run_at"' in form.content
    message = act(
        admin_client,
        "reschedule",
        failed,
        waiting,
        running,
        apply="1",
        run_at=timezone.localtime(run_at).strftime("%Y-%m-%dT%H:%M"),
    )

    retried = ProcrastinateJob.objects.get(id=failed)
    assert (retried.status, retried.scheduled_at) == ("todo", run_at)
    assert ProcrastinateJob.objects.get(id=waiting).status == "cancelled"
    copy = ProcrastinateJob.objects.exclude(id__in=[failed, waiting, running]).get()
    assert (copy.status, copy.scheduled_at, copy.args) == ("todo", run_at, {"notification_id": 9})
    assert (copy.queueing_lock, copy.lock, copy.task_name) == (
        "n-9",
        "l-9",
        "jobs.send_notification",
    )
    assert message == (
        f"Rescheduled 2 jobs. Waiting jobs were replaced by copies with new ids: "
        f"{waiting} → {copy.id}. Left alone: 1 doing (only failed and waiting jobs can be "
        "rescheduled)."
    )


def test_job_actions__from_the_job_page(admin_client: Client, make_job: JobMaker) -> None:
    failed = make_job("failed")
    url = f"{JOBS_URL}{failed}/change/"
    assert b'name="CHANGE_FORM-action"' in admin_client.get(url).content

    response = admin_client.post(
        url, {"CHANGE_FORM-action": "retry_failed", "_selected_action": [failed]}
    )

    assert response.status_code == 302
    assert response["Location"] == url
    assert ProcrastinateJob.objects.get(id=failed).status == "todo"


def test_job_actions__need_the_manage_permission(staff_client: Client, make_job: JobMaker) -> None:
    failed = make_job("failed")

    assert staff_client.get(JOBS_URL).context["action_form"] is None
    staff_client.post(JOBS_URL, {"action": "retry_failed", "_selected_action": [failed]})

    assert ProcrastinateJob.objects.get(id=failed).status == "failed"


def test_job_actions__consider_at_most_the_limit(
    admin_client: Client, make_job: JobMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_admin, "ACTION_LIMIT", 2)
    jobs = [make_job("failed") for _ in range(3)]

    message = act(admin_client, "retry_failed", *jobs)

    assert message == "Retried 2 jobs. Only the 2 newest selected jobs were considered."
    assert ProcrastinateJob.objects.get(id=jobs[0]).status == "failed"


def test_event_list__filters_by_type_and_time_and_finds_a_jobs_events(
    admin_client: Client, make_job: JobMaker
) -> None:
    first = make_job("succeeded")
    second = make_job()
    events = ProcrastinateEvent.objects.order_by("-id")

    assert listed(admin_client, EVENTS_URL) == [e.id for e in events]
    assert listed(admin_client, EVENTS_URL, type="succeeded") == [
        e.id for e in events.filter(type="succeeded")
    ]
    assert listed(admin_client, EVENTS_URL, type="nonsense") == []
    assert listed(admin_client, EVENTS_URL, q=str(second)) == [
        e.id for e in events.filter(job_id=second)
    ]
    assert listed(admin_client, EVENTS_URL, q="abc") == []
    assert listed(admin_client, EVENTS_URL, at_from="-1h") == [e.id for e in events]
    assert listed(admin_client, EVENTS_URL, at_to="-1h") == []
    assert first in {e.job_id for e in events}


def test_capped_paginator__counts_up_to_the_cap() -> None:
    paginator = CappedPaginator(list(range(400)), per_page=3)
    paginator.noun = "rows"
    assert paginator.label == "More than 60 rows"
    assert paginator.num_pages == 20

    small = CappedPaginator(ProcrastinateJob.objects.none(), per_page=3)
    small.noun = "jobs"
    assert small.label == "0 jobs"


# --- Bad parameters and the lookups the pages offer (issue 10, item 6) ----------------------

TOKENS_URL = "/admin/jobs/apitoken/"
NOTIFICATIONS_URL = "/admin/example/notification/"


def refused(client: Client, url: str, query: dict[str, str], *, says: str) -> None:
    """The list answers with itself, unfiltered, and a message naming the problem."""
    response = client.get(url, query, follow=True)

    assert response.status_code == 200
    assert response.redirect_chain == [(f"{url}?e=1", 302)]
    shown = [str(message) for message in response.context["messages"]]
    assert len(shown) == 1, shown
    assert shown[0].startswith("The list is shown without its filters: ")
    assert says in shown[0], shown


@pytest.mark.parametrize(
    ("url", "query", "says"),
    [
        (JOBS_URL, {"deferred_from": "-1000000d"}, "out of range"),
        (JOBS_URL, {"deferred_to": "-99999999999d"}, "out of range"),
        (JOBS_URL, {"deferred_to": "0001-01-01T00:00:00+14:00"}, "out of range"),
        (JOBS_URL, {"status": "todo\x00"}, "status: null characters are not allowed"),
        (JOBS_URL, {"queue": "a\x00"}, "queue: null characters are not allowed"),
        (JOBS_URL, {"task": "a\x00"}, "task: null characters are not allowed"),
        (JOBS_URL, {"lock__regex": "["}, "'lock__regex' is not a filter of this list"),
        (JOBS_URL, {"id__regex": "("}, "'id__regex' is not a filter of this list"),
        (JOBS_URL, {"args__icontains": "x"}, "'args__icontains' is not a filter of this list"),
        (EVENTS_URL, {"at_from": "-1000000d"}, "out of range"),
        (EVENTS_URL, {"at_to": "9999-12-31T23:59:59-14:00"}, "out of range"),
        (EVENTS_URL, {"type": "started\x00"}, "type: null characters are not allowed"),
        (EVENTS_URL, {"at__regex": "["}, "'at__regex' is not a filter of this list"),
        (EVENTS_URL, {"job__args__icontains": "x"}, "'job__args__icontains' is not a filter"),
    ],
)
def test_job_and_event_lists__refuse_bad_parameters_with_a_message(
    staff_client: Client, make_job: JobMaker, url: str, query: dict[str, str], says: str
) -> None:
    make_job()

    refused(staff_client, url, query, says=says)


@pytest.mark.parametrize(
    ("url", "query", "says"),
    [
        (TOKENS_URL, {"key_hash__startswith": "a"}, "'key_hash__startswith' is not a filter"),
        (TOKENS_URL, {"name__regex": "["}, "'name__regex' is not a filter"),
    ],
)
def test_other_lists__refuse_bad_parameters_with_a_message(
    admin_client: Client, url: str, query: dict[str, str], says: str
) -> None:
    from jobs.tokens import issue_token

    issue_token(name="ops", tasks=["jobs.build_report"])

    refused(admin_client, url, query, says=says)


@pytest.mark.parametrize("offset", ["+15:00", "-15:00", "+23:59", "-23:59"])
def test_time_filters__read_any_utc_offset_python_reads(
    staff_client: Client, admin_client: Client, make_job: JobMaker, offset: str
) -> None:
    job = make_job()
    Notification.objects.create(recipient="a@example.com", subject="Hi", sent_at=timezone.now())
    hours, minutes = (int(part) for part in offset[1:].split(":"))
    sign = 1 if offset[0] == "+" else -1
    zone = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    # An hour ago, written with an offset PostgreSQL itself refuses beyond ±15:59: the
    # lists convert it to UTC before any query.
    written = (timezone.now() - dt.timedelta(hours=1)).astimezone(zone).isoformat()

    assert listed(staff_client, deferred_from=written) == [job]
    assert listed(staff_client, deferred_to=written) == []
    assert len(listed(staff_client, EVENTS_URL, at_from=written)) == 1
    assert listed(staff_client, EVENTS_URL, at_to=written) == []
    assert len(listed(admin_client, NOTIFICATIONS_URL, sent_at__gte=written)) == 1
    assert listed(admin_client, NOTIFICATIONS_URL, sent_at__lt=written) == []


def test_time_filters__read_far_dates_that_stay_in_range(
    staff_client: Client, make_job: JobMaker
) -> None:
    job = make_job()

    assert listed(staff_client, deferred_to="0001-01-02") == []
    assert listed(staff_client, deferred_from="0001-01-02") == [job]
    assert listed(staff_client, deferred_from="-3650d") == [job]
    assert listed(staff_client, deferred_from="9999-12-30") == []


@pytest.mark.parametrize("url", [JOBS_URL, TOKENS_URL])
@pytest.mark.parametrize("selected", ["abc", "1\x00", "1.5"])
def test_actions__refuse_selections_that_are_not_ids(
    admin_client: Client, make_job: JobMaker, url: str, selected: str
) -> None:
    failed = make_job("failed")
    action = "retry_failed" if url == JOBS_URL else "revoke"

    response = admin_client.post(url, {"action": action, "_selected_action": [selected]})

    assert response.status_code == 302
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert shown == [f"Nothing was done: {selected!r} is not the id of a row of this list."]
    assert ProcrastinateJob.objects.get(id=failed).status == "failed"


@pytest.mark.parametrize(
    ("run_at", "says"),
    [
        ("0001-01-01T00:00", "Out of range once converted to UTC."),
        ("2000-01-01T00:00", "At most 1 day in the past."),
        ("9999-12-31T23:59", "At most 365 days ahead."),
    ],
)
def test_job_actions__reschedule_refuses_times_out_of_bounds(
    admin_client: Client,
    make_job: JobMaker,
    settings: Any,
    run_at: str,
    says: str,
) -> None:
    # East of UTC: the first day of year 1 is still a day before Christ in UTC.
    settings.TIME_ZONE = "Asia/Tokyo"
    failed = make_job("failed")
    waiting = make_job()

    response = admin_client.post(
        JOBS_URL,
        {
            "action": "reschedule",
            "_selected_action": [failed, waiting],
            "apply": "1",
            "run_at": run_at,
        },
    )

    assert response.status_code == 200
    assert says in response.content.decode()
    assert ProcrastinateJob.objects.get(id=failed).status == "failed"
    assert ProcrastinateJob.objects.get(id=waiting).status == "todo"
    assert ProcrastinateJob.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_job_actions__rescheduled_jobs_are_listed_and_run(
    admin_client: Client, make_job: JobMaker, settings: Any, run_worker: Any
) -> None:
    settings.TIME_ZONE = "America/Los_Angeles"  # the form's time is the site's, not UTC
    notifications = [
        Notification.objects.create(recipient=f"{n}@example.com", subject="Hi") for n in (1, 2)
    ]
    failed = make_job("failed", args={"notification_id": notifications[0].pk})
    waiting = make_job(args={"notification_id": notifications[1].pk}, schedule_in={"days": 3})
    now = timezone.localtime().replace(second=0, microsecond=0)

    message = act(
        admin_client,
        "reschedule",
        failed,
        waiting,
        apply="1",
        run_at=now.strftime("%Y-%m-%dT%H:%M"),
    )

    assert message.startswith("Rescheduled 2 jobs.")
    copy = ProcrastinateJob.objects.exclude(id__in=[failed, waiting]).get().id
    assert ProcrastinateJob.objects.get(id=failed).scheduled_at == now
    assert ProcrastinateJob.objects.get(id=copy).scheduled_at == now
    assert set(listed(admin_client)) == {failed, waiting, copy}
    for job_id in (failed, copy):
        assert admin_client.get(f"{JOBS_URL}{job_id}/change/").status_code == 200

    run_worker(EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")

    # (The worker also defers the periodic tasks' latest ticks.)
    ours = ProcrastinateJob.objects.filter(id__in=[failed, waiting, copy])
    statuses = dict(ours.values_list("id", "status"))
    assert statuses == {failed: "succeeded", waiting: "cancelled", copy: "succeeded"}
    assert admin_client.get(f"{JOBS_URL}{copy}/change/").status_code == 200


# --- The run-command page (item 5) and the periodic-tasks page (item 9) ---------------------

RUN_COMMAND_URL = "/admin/procrastinate/procrastinatejob/run-command/"
PERIODIC_URL = "/admin/procrastinate/procrastinatejob/periodic-tasks/"


def staff_with(*codenames: str) -> Client:
    """A client logged in as a staff user with only these `app_label.codename` permissions."""
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(f"staff-{User.objects.count()}", is_staff=True)
    for name in codenames:
        app_label, codename = name.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


def test_run_command_page__needs_its_own_permission() -> None:
    managers = staff_with("jobs.manage_job", "procrastinate.view_procrastinatejob")
    runners = staff_with("jobs.run_command")

    assert managers.get(RUN_COMMAND_URL).status_code == 403
    post = {"command": "prune_jobs", "arguments": "--status failed --older-than-hours 1"}
    assert managers.post(RUN_COMMAND_URL, post).status_code == 403
    assert not ProcrastinateJob.objects.exists()

    assert runners.get(RUN_COMMAND_URL).status_code == 200
    assert runners.post(RUN_COMMAND_URL, post).status_code == 302
    assert ProcrastinateJob.objects.get().args["command"] == "prune_jobs"


def test_run_command_page__records_who_asked_in_the_job(admin_client: Client) -> None:
    response = admin_client.post(
        RUN_COMMAND_URL, {"command": "prune_jobs", "arguments": "--dry-run"}
    )

    job = ProcrastinateJob.objects.get()
    assert job.args == {"command": "prune_jobs", "args": ["--dry-run"], "requested_by": "admin"}
    page = admin_client.get(response["Location"]).content.decode()
    assert "&quot;requested_by&quot;: &quot;admin&quot;" in page


@pytest.mark.parametrize(
    ("command", "arguments"),
    [
        ("prune_jobs", "--help"),
        ("prune_jobs", "-h"),
        ("prune_jobs", "--dry-run -h"),
        ("prune_jobs", "--he"),
        ("prune_jobs", "--h"),
        ("prune_jobs", "--version"),
        ("prune_jobs", "--vers"),
        ("delete_expired_tokens", "--days 0 --help"),
        ("delete_expired_comments", "--hel"),
    ],
)
def test_run_command_page__refuses_options_that_only_print(
    admin_client: Client, command: str, arguments: str
) -> None:
    response = admin_client.post(RUN_COMMAND_URL, {"command": command, "arguments": arguments})

    assert response.status_code == 200
    errors = response.context["form"].non_field_errors()
    assert len(errors) == 1
    assert "only prints" in errors[0]
    assert not ProcrastinateJob.objects.exists()


def test_periodic_tasks_page__needs_the_permission_to_view_jobs(staff_client: Client) -> None:
    nobody = staff_with()
    runner = staff_with("procrastinate.view_procrastinatejob", "jobs.run_command")

    assert nobody.get(PERIODIC_URL).status_code == 403
    page = staff_client.get(PERIODIC_URL)
    assert page.status_code == 200
    assert b"jobs.recover_stalled_jobs" in page.content
    assert RUN_COMMAND_URL.encode() not in page.content  # a link it could not follow
    assert RUN_COMMAND_URL.encode() in runner.get(PERIODIC_URL).content


def test_periodic_tasks_page__shows_times_in_utc_as_it_says(
    admin_client: Client, settings: Any
) -> None:
    settings.TIME_ZONE = "Asia/Tokyo"  # UTC+9: a time shown in it would read 12:30

    response = admin_client.get(PERIODIC_URL)

    daily = next(item for item in response.context["overview"] if item.cron == "30 3 * * *")
    page = response.content.decode()
    row = page[page.index(f"<strong>{daily.task_name}</strong>") :]
    row = row[: row.index("</tr>")]
    assert f"{daily.next_run.astimezone(dt.UTC):%Y-%m-%d} 03:30:00" in row
    assert "Schedules and times are UTC" in page


# --- A revoked token stays revoked (item 9) --------------------------------------------------


def test_token_admin__a_revoked_token_stays_revoked(admin_client: Client) -> None:
    from django.core.exceptions import ValidationError

    from jobs.models import ApiToken
    from jobs.tokens import authenticate, issue_token

    token, raw = issue_token(name="old", tasks=["jobs.build_report"])
    token.revoke(at=timezone.now())
    revoked_at = ApiToken.objects.get().revoked_at
    url = f"{TOKENS_URL}{token.pk}/change/"

    page = admin_client.get(url).content.decode()
    assert 'name="revoked_at_0"' not in page  # shown, not editable
    response = admin_client.post(
        url,
        {"tasks": '["jobs.send_notification"]', "revoked_at_0": "", "revoked_at_1": ""},
    )

    assert response.status_code == 302
    assert ApiToken.objects.get().revoked_at == revoked_at
    assert authenticate(raw) is None
    token.revoked_at = None
    with pytest.raises(ValidationError, match="A revoked token stays revoked"):
        token.full_clean()


@pytest.mark.parametrize(
    ("date", "says"),
    [
        ("0001-01-01", "Cannot be before the token was created"),
        ("2000-01-01", "Cannot be before the token was created"),
        ("2999-01-01", "Cannot be in the future"),
    ],
)
def test_token_admin__refuses_revocation_times_out_of_bounds(
    admin_client: Client, settings: Any, date: str, says: str
) -> None:
    from jobs.models import ApiToken
    from jobs.tokens import authenticate, issue_token

    settings.TIME_ZONE = "Asia/Tokyo"
    token, raw = issue_token(name="ops", tasks=["jobs.build_report"])

    response = admin_client.post(
        f"{TOKENS_URL}{token.pk}/change/",
        {"tasks": '["jobs.build_report"]', "revoked_at_0": date, "revoked_at_1": "00:00:00"},
    )

    assert response.status_code == 200
    assert says in response.content.decode()
    assert ApiToken.objects.get().revoked_at is None
    assert authenticate(raw) == token
    assert admin_client.get(TOKENS_URL).status_code == 200
