"""Contact imports: the page fans an import out as one batch of jobs, one per pasted row, in the
transaction that saves it, with a summary mail as the batch's `on_finish` callback; real
workers run it, and the page follows its progress."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission, User
from django.core import mail
from django.db import connection
from django.test import AsyncClient, Client, override_settings
from django.test.utils import CaptureQueriesContext
from procrastinate.contrib.django.models import ProcrastinateJob

from example import imports, services, tasks
from example.models import Contact, ContactImport, ContactImportRow
from jobs import workflows
from jobs.models import Batch, BatchJob
from jobs.testing import WorkerProcess, wait_until
from tests.example.test_tasks import FILE_MAIL, sent_messages

pytestmark = pytest.mark.django_db(transaction=True)

# Line 2 is blank; line 3's address is not one: its job fails, and the summary says so.
PASTED = (
    "Ada Lovelace, ada@example.com\n"
    "\n"
    "Charles Babbage, charles(at)example.com\n"
    "Hopper, Grace, GRACE@Example.com\n"
)
START_PATHS = ["/imports/start/", "/imports/start-async/"]


def user_with(username: str, *permissions: str, email: str = "") -> User:
    user = User.objects.create_user(username, email=email, password="pw-for-tests")
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


@pytest.fixture
def importer() -> User:
    return user_with("ada", *services.START_IMPORT_PERMISSIONS, email="ada@example.com")


@pytest.fixture
def member(importer: User) -> Client:
    client = Client()
    client.force_login(importer)
    return client


@pytest.fixture
async def amember(importer: User) -> AsyncClient:
    client = AsyncClient()
    await client.aforce_login(importer)
    return client


def assert_nothing_written() -> None:
    assert not ContactImport.objects.exists()
    assert not ContactImportRow.objects.exists()
    assert not Batch.objects.exists()
    assert not BatchJob.objects.exists()
    assert not ProcrastinateJob.objects.exists()


def progress_of(client: Client, contact_import: ContactImport) -> dict[str, Any]:
    response = client.get(f"/imports/{contact_import.pk}/progress/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    return dict(json.loads(response.content))


# --- Reading the pasted text -----------------------------------------------------------------


def test_parse_contacts__one_contact_a_line_the_address_after_the_last_comma() -> None:
    contacts = imports.parse_contacts(PASTED + "  bob@example.com  \n")

    assert contacts == [
        imports.PastedContact(line=1, name="Ada Lovelace", email="ada@example.com"),
        imports.PastedContact(line=3, name="Charles Babbage", email="charles(at)example.com"),
        imports.PastedContact(line=4, name="Hopper, Grace", email="GRACE@Example.com"),
        imports.PastedContact(line=5, name="", email="bob@example.com"),
    ]


TOO_LONG = "x" * (imports.MAX_ROWS * (imports.NAME_LENGTH + imports.EMAIL_LENGTH + 4) + 1)


@pytest.mark.parametrize("path", START_PATHS)
@pytest.mark.parametrize(
    ("contacts", "says"),
    [
        ("", "This field is required."),
        ("\n  \n", "This field is required."),
        ("Ada Lovelace,\nbob@example.com", "Line 1: no email address after the last comma."),
        (f"{'A' * 101}, ada@example.com", "Line 1: the name is longer than 100 characters."),
        (f"Ada, {'a' * 250}@example.com", "Line 1: the address is longer than 254 characters."),
        ("Ada, ada@example.com\x00", "Null characters are not allowed."),
        ("a@example.com\n" * 1001, "At most 1000 contacts per import, not 1001."),
        (",\n" * 7, "Line 5: no email address after the last comma.</li><li>… and 2 more."),
        (TOO_LONG, "Ensure this value has at most"),
    ],
)
def test_start_contact_import__bad_input_gets_a_form_error_and_writes_nothing(
    member: Client, path: str, contacts: str, says: str
) -> None:
    response = member.post(path, {"contacts": contacts})

    assert response.status_code == 400
    assert b'id="import-form"' in response.content
    assert says in response.content.decode()
    assert_nothing_written()


@pytest.mark.parametrize("path", START_PATHS)
def test_start_contact_import__a_user_without_an_address_gets_a_form_error(path: str) -> None:
    client = Client()
    client.force_login(user_with("nomail", *services.START_IMPORT_PERMISSIONS))

    response = client.post(path, {"contacts": PASTED})

    assert response.status_code == 400
    assert "Your account has no email address" in response.content.decode()
    assert_nothing_written()


# --- Who may use the pages ---------------------------------------------------------------------


def import_pages(import_id: int) -> list[tuple[str, str, dict[str, str]]]:
    return [
        ("get", "/imports/", {}),
        ("post", "/imports/start/", {"contacts": PASTED}),
        ("post", "/imports/start-async/", {"contacts": PASTED}),
        ("get", f"/imports/{import_id}/", {}),
        ("get", f"/imports/{import_id}/progress/", {}),
    ]


def someone_s_import() -> ContactImport:
    owner = user_with("owner", email="owner@example.com")
    contacts = imports.parse_contacts("Ada, ada@example.com")
    return services.start_contact_import(
        user=owner, summary_to="owner@example.com", contacts=contacts
    )


def test_import_pages__anonymous_visitor_is_sent_to_the_login_page(client: Client) -> None:
    existing = someone_s_import()
    for method, path, data in import_pages(existing.pk):
        response = getattr(client, method)(path, data)
        assert response.status_code == 302, path
        assert response["Location"] == f"/admin/login/?next={path}"
    assert ContactImport.objects.get() == existing


def test_import_pages__a_user_without_the_permissions_gets_403() -> None:
    existing = someone_s_import()
    client = Client()
    # Every other example permission, but not the imports'.
    others = set(services.EXAMPLE_PERMISSIONS) - set(services.START_IMPORT_PERMISSIONS)
    client.force_login(user_with("other", *others, email="other@example.com"))
    for method, path, data in import_pages(existing.pk):
        assert getattr(client, method)(path, data).status_code == 403, path
    assert ContactImport.objects.get() == existing


def test_import_pages__viewing_does_not_let_start_one() -> None:
    client = Client()
    client.force_login(
        user_with("viewer", *services.VIEW_IMPORTS_PERMISSIONS, email="viewer@example.com")
    )

    page = client.get("/imports/")

    assert page.status_code == 200
    assert b'id="import-form"' not in page.content
    for path in START_PATHS:
        assert client.post(path, {"contacts": PASTED}).status_code == 403
    assert_nothing_written()


def test_home__links_to_the_imports_for_those_who_may_see_them() -> None:
    with_imports, without = Client(), Client()
    with_imports.force_login(user_with("all", *services.EXAMPLE_PERMISSIONS))
    without.force_login(user_with("overview", *services.OVERVIEW_PERMISSIONS))

    assert b'id="imports-link"' in with_imports.get("/").content
    assert b'id="imports-link"' not in without.get("/").content


@override_settings(EXAMPLE_PAGES=False)
def test_import_pages__switched_off_answer_404_to_everyone(client: Client, member: Client) -> None:
    existing = someone_s_import()
    for method, path, data in import_pages(existing.pk):
        assert getattr(client, method)(path, data).status_code == 404, path
        assert getattr(member, method)(path, data).status_code == 404, path
    assert ContactImport.objects.get() == existing


@pytest.mark.parametrize("suffix", ["", "progress/"])
def test_contact_import__another_user_s_import_is_not_found(member: Client, suffix: str) -> None:
    theirs = someone_s_import()

    response = member.get(f"/imports/{theirs.pk}/{suffix}")

    assert response.status_code == 404
    assert b"ada@example.com" not in response.content


@pytest.mark.parametrize("import_id", ["424242", "9" * 30])
def test_contact_import__unknown_import_is_404(member: Client, import_id: str) -> None:
    assert member.get(f"/imports/{import_id}/").status_code == 404
    assert member.get(f"/imports/{import_id}/progress/").status_code == 404


def test_contact_imports__lists_only_the_user_s_own_imports(member: Client) -> None:
    theirs = someone_s_import()
    member.post("/imports/start/", {"contacts": PASTED})
    (mine,) = ContactImport.objects.exclude(pk=theirs.pk)

    page = member.get("/imports/").content.decode()

    assert f'data-import-id="{mine.pk}"' in page
    assert f'data-import-id="{theirs.pk}"' not in page
    assert 'class="status status-running">running<' in page


def test_contact_import_progress__its_queries_do_not_grow_with_the_rows(member: Client) -> None:
    """The page asks every second: the cost of an answer is the same for 1 row or 200."""

    def queries(contacts: str) -> int:
        member.post("/imports/start/", {"contacts": contacts})
        contact_import = ContactImport.objects.latest("pk")
        with CaptureQueriesContext(connection) as captured:
            progress_of(member, contact_import)
        return len(captured)

    assert queries("Ada, ada@example.com") == queries("bad address\n" * 200)


# --- Saving the import and deferring its batch, in one transaction -----------------------------


def assert_import_deferred(contact_import: ContactImport) -> None:
    """The import, its rows and one batch of one job per row, with its summary callback."""
    assert contact_import.summary_to == "ada@example.com"
    rows = list(contact_import.rows.order_by("line"))
    assert [(row.line, row.name, row.email, row.status) for row in rows] == [
        (1, "Ada Lovelace", "ada@example.com", "pending"),
        (3, "Charles Babbage", "charles(at)example.com", "pending"),
        (4, "Hopper, Grace", "GRACE@Example.com", "pending"),
    ]
    batch = Batch.objects.get()
    assert contact_import.batch_id == batch.pk
    assert (batch.kind, batch.total, batch.pending) == ("batch", 3, 3)
    assert batch.description == f"Contact import #{contact_import.pk}"
    assert batch.properties == {"import_id": contact_import.pk}
    assert batch.callbacks["on_finish"]["task_name"] == "example.send_import_summary"
    assert batch.callbacks["on_finish"]["args"] == {"import_id": contact_import.pk}
    assert set(batch.callbacks) == {"on_finish"}
    jobs = ProcrastinateJob.objects.order_by("id")
    assert [(job.task_name, job.queue_name, job.args) for job in jobs] == [
        ("example.import_contact", "imports", {"row_id": row.pk}) for row in rows
    ]
    assert set(BatchJob.objects.values_list("job_id", flat=True)) == {job.id for job in jobs}


def test_start_contact_import__sync_view_saves_the_import_and_defers_one_batch(
    member: Client,
) -> None:
    response = member.post("/imports/start/", {"contacts": PASTED})

    contact_import = ContactImport.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/imports/{contact_import.pk}/"
    assert_import_deferred(contact_import)


async def test_start_contact_import__async_view_saves_the_import_and_defers_one_batch(
    amember: AsyncClient,
) -> None:
    response = await amember.post("/imports/start-async/", {"contacts": PASTED})

    contact_import = await ContactImport.objects.aget()
    assert response.status_code == 302
    assert response["Location"] == f"/imports/{contact_import.pk}/"
    await sync_to_async(assert_import_deferred)(contact_import)


def test_start_contact_import__a_failing_defer_leaves_no_import(
    member: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    defer_batch = workflows.defer_batch

    def fail(*args: Any, **kwargs: Any) -> Batch:
        batch = defer_batch(*args, **kwargs)
        # Written by then, in the view's transaction: the import, its rows, the jobs.
        assert ContactImportRow.objects.count() == ProcrastinateJob.objects.count() == 3
        raise RuntimeError(f"boom in the defer of batch {batch.pk}")

    monkeypatch.setattr(workflows, "defer_batch", fail)

    with pytest.raises(RuntimeError, match="boom in the defer"):
        member.post("/imports/start/", {"contacts": PASTED})

    assert_nothing_written()


async def test_start_contact_import__a_failing_async_defer_leaves_no_import(
    amember: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    adefer_batch = workflows.adefer_batch

    async def fail(*args: Any, **kwargs: Any) -> Batch:
        batch = await adefer_batch(*args, **kwargs)
        assert await ProcrastinateJob.objects.acount() == 3
        raise RuntimeError(f"boom in the defer of batch {batch.pk}")

    monkeypatch.setattr(workflows, "adefer_batch", fail)

    with pytest.raises(RuntimeError, match="boom in the defer"):
        await amember.post("/imports/start-async/", {"contacts": PASTED})

    await sync_to_async(assert_nothing_written)()


@pytest.mark.parametrize("attach", ["attach_batch", "aattach_batch"])
async def test_start_contact_import__a_failure_after_the_defer_leaves_no_import(
    amember: AsyncClient, monkeypatch: pytest.MonkeyPatch, attach: str
) -> None:
    def fail(self: ContactImport, batch_id: int) -> None:
        raise RuntimeError("boom after the defer")

    async def afail(self: ContactImport, batch_id: int) -> None:
        raise RuntimeError("boom after the defer")

    monkeypatch.setattr(ContactImport, attach, fail if attach == "attach_batch" else afail)
    path = "/imports/start/" if attach == "attach_batch" else "/imports/start-async/"

    with pytest.raises(RuntimeError, match="boom after the defer"):
        await amember.post(path, {"contacts": PASTED})

    await sync_to_async(assert_nothing_written)()


# --- The tasks, called directly ------------------------------------------------------------------


def test_import_contact__imports_a_row_once_and_fails_a_bad_one() -> None:
    contact_import = someone_s_import()
    good = contact_import.rows.get()
    bad = ContactImportRow.objects.create(
        contact_import=contact_import, line=2, name="Bob", email="bob at example"
    )
    same = ContactImportRow.objects.create(
        contact_import=contact_import, line=3, name="", email="ADA@example.com"
    )

    first = tasks.import_contact(row_id=good.pk)
    assert tasks.import_contact(row_id=good.pk) == first  # a second run changes nothing
    with pytest.raises(tasks.InvalidContactRow, match="Line 2: 'bob at example' is not an"):
        tasks.import_contact(row_id=bad.pk)
    tasks.import_contact(row_id=same.pk)

    contact = Contact.objects.get()  # one address, one contact: its name kept
    assert (contact.email, contact.name) == ("ada@example.com", "Ada")
    assert first == {"row_id": good.pk, "status": "imported", "contact_id": contact.pk}
    bad.refresh_from_db()
    assert (bad.status, bad.error) == ("invalid", "'bob at example' is not an email address.")
    assert tasks.import_contact(row_id=424242) == {"row_id": 424242, "status": "deleted"}


def test_send_import_summary__mails_the_counts_once() -> None:
    contact_import = someone_s_import()
    batch = {"id": 1, "total": 3, "succeeded": 2, "failed": 1, "cancelled": 0}

    first = tasks.send_import_summary(import_id=contact_import.pk, batch=batch)
    second = tasks.send_import_summary(import_id=contact_import.pk, batch=batch)

    assert first == {
        "import_id": contact_import.pk,
        "to": "owner@example.com",
        "succeeded": 2,
        "failed": 1,
    }
    assert second == {"import_id": contact_import.pk, "already_sent": True}
    (message,) = mail.outbox
    assert message.to == ["owner@example.com"]
    assert message.subject == f"Contact import #{contact_import.pk}: 2 of 3 imported"
    assert tasks.send_import_summary(import_id=424242, batch=batch) == {
        "import_id": 424242,
        "status": "deleted",
    }


def test_reset_demo_user__gives_the_demo_user_an_address_for_the_summaries() -> None:
    services.reset_demo_user()
    assert User.objects.get(username="demo").email == "demo@example.com"

    User.objects.filter(username="demo").update(email="me@example.org")
    services.reset_demo_user()
    assert User.objects.get(username="demo").email == "me@example.org"


# --- Real workers --------------------------------------------------------------------------------


def assert_imported_and_summarized(client: Client, outbox: Path) -> None:
    """What a worker leaves of PASTED's import: two contacts, one failed row, one summary
    callback that ran once and mailed the counts, and the progress that says so."""
    contact_import = ContactImport.objects.get()
    rows = {row.line: row for row in contact_import.rows.all()}
    assert {line: row.status for line, row in rows.items()} == {
        1: "imported",
        3: "invalid",
        4: "imported",
    }
    assert sorted(Contact.objects.values_list("email", "name")) == [
        ("ada@example.com", "Ada Lovelace"),
        ("grace@example.com", "Hopper, Grace"),
    ]
    assert contact_import.batch_id is not None
    batch = Batch.objects.get(pk=contact_import.batch_id)
    assert (batch.total, batch.pending, batch.succeeded, batch.failed) == (3, 0, 2, 1)
    assert batch.finished_at is not None
    (summary_job,) = ProcrastinateJob.objects.filter(task_name="example.send_import_summary")
    assert batch.on_finish_job_id == summary_job.id
    assert summary_job.status == "succeeded"
    assert summary_job.args["batch"]["succeeded"] == 2
    failed_job = ProcrastinateJob.objects.get(task_name="example.import_contact", status="failed")
    assert failed_job.args == {"row_id": rows[3].pk}

    (message,) = sent_messages(outbox)
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == f"Contact import #{contact_import.pk}: 2 of 3 imported"
    assert message["Message-ID"].startswith(f"<contact-import-{contact_import.pk}.")
    body = message.get_payload()
    assert "Rows: 3\nImported: 2\nFailed: 1\n" in body
    assert "line 3: 'charles(at)example.com' is not an email address." in body
    contact_import.refresh_from_db()
    assert contact_import.summary_sent_at is not None

    progress = progress_of(client, contact_import)
    assert progress["state"] == "failed"
    assert progress["counts"] == {
        "total": 3,
        "waiting": 0,
        "running": 0,
        "succeeded": 2,
        "failed": 1,
        "cancelled": 0,
    }
    assert progress["failures"] == [
        {
            "line": 3,
            "name": "Charles Babbage",
            "email": "charles(at)example.com",
            "error": "'charles(at)example.com' is not an email address.",
        }
    ]
    assert progress["summary"]["state"] == "sent"
    assert progress["done"] is True
    page = client.get(f"/imports/{contact_import.pk}/").content.decode()
    assert 'data-done="true"' in page
    assert "charles(at)example.com" in page


def test_contact_import__a_real_worker_imports_the_rows_and_mails_the_summary_once(
    member: Client, run_worker: Callable[..., Any], tmp_path: Path
) -> None:
    member.post("/imports/start/", {"contacts": PASTED})
    contact_import = ContactImport.objects.get()
    before = progress_of(member, contact_import)
    assert (before["state"], before["done"], before["summary"]["state"]) == (
        "running",
        False,
        "waiting",
    )
    assert before["counts"]["waiting"] == 3
    assert 'data-done="false"' in member.get(f"/imports/{contact_import.pk}/").content.decode()

    run_worker(EMAIL_BACKEND=FILE_MAIL, EMAIL_FILE_PATH=str(tmp_path / "mail"))

    assert_imported_and_summarized(member, tmp_path / "mail")


async def test_contact_import__a_real_worker_runs_the_batch_the_async_view_deferred(
    amember: AsyncClient, run_worker: Callable[..., Any], importer: User, tmp_path: Path
) -> None:
    await amember.post("/imports/start-async/", {"contacts": PASTED})

    await sync_to_async(run_worker)(EMAIL_BACKEND=FILE_MAIL, EMAIL_FILE_PATH=str(tmp_path / "mail"))

    def check() -> None:
        client = Client()
        client.force_login(importer)
        assert_imported_and_summarized(client, tmp_path / "mail")

    await sync_to_async(check)()


def test_contact_import__a_row_retried_by_hand_reopens_the_batch_and_mails_no_second_summary(
    member: Client, run_worker: Callable[..., Any], tmp_path: Path
) -> None:
    """A failed row retried by hand opens its batch again; when it ends again, no second
    summary: a callback runs once in a batch's life."""
    member.post("/imports/start/", {"contacts": PASTED})
    outbox = tmp_path / "mail"
    run_worker(EMAIL_BACKEND=FILE_MAIL, EMAIL_FILE_PATH=str(outbox))
    contact_import = ContactImport.objects.get()
    bad = contact_import.rows.get(line=3)
    bad.email = "charles@example.com"  # fixed by hand
    bad.save(update_fields=["email"])

    assert contact_import.batch_id is not None
    (failed_job,) = workflows.retry_failed(contact_import.batch_id).done
    assert progress_of(member, contact_import)["state"] == "running"
    run_worker(EMAIL_BACKEND=FILE_MAIL, EMAIL_FILE_PATH=str(outbox))

    bad.refresh_from_db()
    assert bad.status == "imported"
    assert ProcrastinateJob.objects.get(id=failed_job).status == "succeeded"
    progress = progress_of(member, contact_import)
    assert (progress["state"], progress["done"]) == ("succeeded", True)
    assert progress["counts"]["succeeded"] == 3
    assert len(sent_messages(outbox)) == 1
    assert ProcrastinateJob.objects.filter(task_name="example.send_import_summary").count() == 1


# --- In a browser --------------------------------------------------------------------------------


def test_contact_import__the_page_follows_the_batch_until_it_is_done_in_chromium(
    browser: Any,
    start_worker: Callable[..., WorkerProcess],
    site_server: Callable[..., str],
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    user = user_with("ada", *services.START_IMPORT_PERMISSIONS, email="ada@example.com")
    User.objects.filter(pk=user.pk).update(is_staff=True)  # the admin's login page
    url = site_server()
    browser.get(f"{url}/admin/login/?next=/imports/")
    browser.find_element(By.NAME, "username").send_keys("ada")
    browser.find_element(By.NAME, "password").send_keys("pw-for-tests")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_until(lambda: browser.current_url.endswith("/imports/"), what="the imports page")
    # No worker yet: the page shows the batch waiting, and keeps asking.
    browser.find_element(By.NAME, "contacts").send_keys(PASTED)
    browser.find_element(By.CSS_SELECTOR, "#import-form button[formaction]").click()
    wait_until(lambda: "/imports/" in browser.current_url and "Batch #" in browser.page_source)
    root = browser.find_element(By.ID, "import-progress")
    assert root.get_attribute("data-done") == "false"
    assert browser.find_element(By.CSS_SELECTOR, '[data-count="waiting"]').text == "3"
    wait_until(lambda: int(root.get_attribute("data-refreshes")) >= 1, what="the page to poll")

    start_worker(EMAIL_BACKEND=FILE_MAIL, EMAIL_FILE_PATH=str(tmp_path / "mail"))

    wait_until(lambda: root.get_attribute("data-done") == "true", what="the import to be done")
    assert browser.find_element(By.ID, "import-state").text == "failed"
    assert browser.find_element(By.CSS_SELECTOR, '[data-count="succeeded"]').text == "2"
    assert browser.find_element(By.CSS_SELECTOR, '[data-count="failed"]').text == "1"
    assert browser.find_element(By.ID, "summary-state").text == "sent"
    failures = browser.find_element(By.ID, "import-failures").text
    assert "charles(at)example.com" in failures
    assert browser.find_element(By.ID, "refresh-status").text == "Finished."
