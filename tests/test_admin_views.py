from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin import AdminSite
from django.contrib.auth.models import Permission
from django.test import Client, RequestFactory, override_settings
from procrastinate.contrib.django.models import ProcrastinateJob

from jobs.admin.jobs import JobAdmin

pytestmark = pytest.mark.django_db

RUN_COMMAND_URL = "/admin/procrastinate/procrastinatejob/run-command/"


def test_run_command_form__offers_the_allow_list_of_the_moment(admin_client: Client) -> None:
    with override_settings(JOBS_BACKGROUND_COMMANDS=("prune_jobs",)):
        page = admin_client.get(RUN_COMMAND_URL)
        refused = admin_client.post(
            RUN_COMMAND_URL, {"command": "delete_expired_tokens", "arguments": ""}
        )

    assert b'<option value="prune_jobs"' in page.content
    assert b'<option value="delete_expired_tokens"' not in page.content
    assert refused.status_code == 200
    assert "command" in refused.context["form"].errors
    assert not ProcrastinateJob.objects.exists()

    page = admin_client.get(RUN_COMMAND_URL)
    assert b'<option value="delete_expired_tokens"' in page.content


@pytest.mark.parametrize(
    ("name", "permission"),
    [
        ("jobs-admin-periodic-tasks", "procrastinate.view_procrastinatejob"),
        ("jobs-admin-run-command", "jobs.run_command"),
    ],
)
def test_admin_pages__show_the_admin_site_that_routes_them(
    name: str, permission: str, rf: RequestFactory, django_user_model: Any
) -> None:
    # A site with an AdminSite of its own: its pages carry its header, not admin.site's.
    site = AdminSite(name="other_admin")
    site.site_header = "The other admin"
    site.register(ProcrastinateJob, JobAdmin)
    (pattern,) = [p for p in site._registry[ProcrastinateJob].get_urls() if p.name == name]
    user = django_user_model.objects.create_user("staff", is_staff=True)
    app_label, codename = permission.split(".")
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label=app_label, codename=codename)
    )
    request = rf.get("/")
    request.user = django_user_model.objects.get(pk=user.pk)

    response = pattern.callback(request)

    assert response.status_code == 200
    assert "The other admin" in response.render().content.decode()
