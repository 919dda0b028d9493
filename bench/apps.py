from django.apps import AppConfig


class BenchConfig(AppConfig):
    # No models: installed for its management commands only.
    name = "bench"
    verbose_name = "Benchmarks"
