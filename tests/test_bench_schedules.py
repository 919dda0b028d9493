"""`manage.py bench_schedules` (bench/management/commands/bench_schedules.py), at a tiny
scale: the figures at 10,000 schedules are for the command itself, not for tests."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError


@pytest.mark.django_db(transaction=True)
def test_bench_schedules__ticks_real_workers_and_reports_the_lag(tmp_path: Path) -> None:
    out = StringIO()
    output = tmp_path / "figures.json"

    call_command(
        "bench_schedules", "--schedules", "50", "--rounds", "2", "--every", "5",
        "--workers", "1", "--output", str(output), stdout=out,
    )  # fmt: skip

    text = out.getvalue()
    assert "50 schedules due on the same second, 2 rounds 5 s apart, 1 worker" in text
    assert "Due time -> deferred event, all 100 runs: median" in text
    assert "Round 2 (due " in text
    assert "scheduler tick on scheduler0: started" in text
    assert "Runs: 100 of 100; ticks deferred twice: 0" in text
    figures = json.loads(output.read_text())
    assert figures["runs"] == figures["runs_expected"] == 100
    assert figures["ticks_deferred_twice"] == 0
    rounds = figures["per_round"]
    assert [row["runs"] for row in rounds] == [50, 50]
    assert all(row["lag"]["count"] == 50 and row["lag"]["max_ms"] >= 0 for row in rounds)
    assert all(sum(tick["deferred"] for tick in row["ticks"]) == 50 for row in rounds)
    assert all(row["committed_ms"] >= row["lag"]["max_ms"] for row in rounds)


def test_bench_schedules__refuses_bad_arguments() -> None:
    with pytest.raises(CommandError, match="at least 1"):
        call_command("bench_schedules", "--schedules", "0", stdout=StringIO())
    with pytest.raises(CommandError, match="at least 5"):
        call_command("bench_schedules", "--every", "1", stdout=StringIO())
    with pytest.raises(CommandError, match="at most 16"):
        call_command("bench_schedules", "--workers", "17", stdout=StringIO())
    with pytest.raises(CommandError, match="scratch database"):
        call_command("bench_schedules", "--measure-into", "/tmp/x.json", stdout=StringIO())
