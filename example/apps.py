from django.apps import AppConfig


class ExampleConfig(AppConfig):
    """The example site that shows the job system at work (not part of `jobs`)."""

    name = "example"
    verbose_name = "Example site"
