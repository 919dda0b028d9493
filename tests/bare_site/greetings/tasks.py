"""The bare site's own task: deferred from code and over the job API, run by its worker."""

from procrastinate.contrib.django import app

from jobs.http_tasks import callable_over_http


@callable_over_http
@app.task(name="greetings.greet", queue="greetings")
def greet(name: str) -> dict[str, str]:
    return {"greeting": f"Hello, {name}!"}
