from __future__ import annotations

import pytest
from django.test import Client, override_settings
from procrastinate.contrib.django.models import ProcrastinateJob

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
