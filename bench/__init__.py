"""The benchmarks of this project: `manage.py bench_api`, `bench_admin` and `bench_jobs`.

An app of this project, not of `jobs`: a site that installs `jobs` needs none of it (nor its
dependencies, pillow and psutil, in the `bench` dependency group). Every benchmark runs on a
scratch database created next to the configured one, never on the site's data.
"""
