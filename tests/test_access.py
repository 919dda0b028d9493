"""jobs/access.py: the one check of the permission to view jobs (dashboard, periodic-tasks
page, metrics without their token) and the one reading of a bearer token (job API, metrics).
The pages' own tests check that they ask it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, Permission, User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from jobs.access import (
    MalformedAuthorization,
    bearer_token,
    may_view_jobs,
    staff_who_may_view_jobs,
)


def user(*, staff: bool = True, active: bool = True, view_jobs: bool = True) -> User:
    made = User.objects.create_user(
        f"user-{User.objects.count()}", is_staff=staff, is_active=active
    )
    if view_jobs:
        made.user_permissions.add(
            Permission.objects.get(
                content_type__app_label="procrastinate", codename="view_procrastinatejob"
            )
        )
    return User.objects.get(pk=made.pk)  # a fresh permission cache


@pytest.mark.django_db
def test_may_view_jobs__active_staff_with_the_permission_only() -> None:
    assert may_view_jobs(user())
    assert not may_view_jobs(user(view_jobs=False))
    assert not may_view_jobs(user(staff=False))
    assert not may_view_jobs(user(active=False))
    assert not may_view_jobs(AnonymousUser())


@pytest.mark.django_db
def test_staff_who_may_view_jobs__login_for_visitors_403_for_staff_without_it(
    rf: RequestFactory,
) -> None:
    @staff_who_may_view_jobs
    def page(request: HttpRequest) -> HttpResponse:
        return HttpResponse("figures")

    def ask(who: User | AnonymousUser) -> HttpRequest:
        request = rf.get("/page/")
        request.user = who
        return request

    assert page(ask(user())).content == b"figures"
    assert page(ask(AnonymousUser()))["Location"].startswith("/admin/login/")
    with pytest.raises(PermissionDenied):
        page(ask(user(view_jobs=False)))


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("Bearer abc", "abc"),
        ("bearer abc ", "abc"),
        ("BEARER  abc", "abc"),
    ],
)
def test_bearer_token__read_from_the_authorization_header(
    rf: RequestFactory, header: str | None, token: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}

    assert bearer_token(rf.get("/", headers=headers)) == token


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer   ", "Basic YTpi", "Token abc"])
def test_bearer_token__another_header_is_malformed(rf: RequestFactory, header: str) -> None:
    with pytest.raises(MalformedAuthorization):
        bearer_token(rf.get("/", headers={"Authorization": header}))
