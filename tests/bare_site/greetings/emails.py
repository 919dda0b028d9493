"""A task of the bare site written with Django's task API, in a module of its app that no
worker imports as it starts: the worker finds it by its path."""

from django.tasks import task


@task
def welcome(name: str) -> str:
    return f"Welcome, {name}!"
