"""HTTP load on a local server: timed requests one after another, requests per second from
concurrent clients, and a session cookie from the admin's login form."""

from __future__ import annotations

import http.client
import http.cookies
import re
import threading
import time
import urllib.parse
from collections.abc import Callable

from bench.timing import Latency

# (method, path, body) of one request.
Request = tuple[str, str, bytes | None]


def time_requests(
    port: int, requests: list[Request], headers: dict[str, str]
) -> tuple[Latency, list[int]]:
    """Send `(method, path, body)` requests one after another on one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    durations: list[float] = []
    statuses: list[int] = []
    try:
        for method, path, body in requests:
            started = time.perf_counter()
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            durations.append(time.perf_counter() - started)
            statuses.append(response.status)
    finally:
        connection.close()
    return Latency.of(durations), statuses


def requests_per_second(
    port: int,
    make_request: Callable[[int], Request],
    headers: dict[str, str],
    *,
    seconds: float,
    clients: int,
) -> tuple[float, dict[int, int]]:
    """Run `clients` keep-alive clients for `seconds`; return requests/s and status counts."""
    counts: dict[int, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        sent = 0
        local: dict[int, int] = {}
        try:
            while time.monotonic() < stop_at:
                method, path, body = make_request(number * 10_000_000 + sent)
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                local[response.status] = local.get(response.status, 0) + 1
                sent += 1
        finally:
            connection.close()
            with lock:
                for status, n in local.items():
                    counts[status] = counts.get(status, 0) + n

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return sum(counts.values()) / elapsed, counts


def _set_cookies(response: http.client.HTTPResponse) -> dict[str, str]:
    jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    for header in response.headers.get_all("Set-Cookie") or []:
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items()}


def admin_login(port: int, username: str, password: str) -> str:
    """Log in through the admin's login form; return the `Cookie` header of the session."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/admin/login/")
        response = connection.getresponse()
        page = response.read().decode()
        cookies = _set_cookies(response)
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        if found is None:
            raise RuntimeError("no login form at /admin/login/")
        form = urllib.parse.urlencode(
            {
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": found[1],
                "next": "/admin/",
            }
        )
        connection.request(
            "POST",
            "/admin/login/",
            body=form,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
            },
        )
        response = connection.getresponse()
        response.read()
        if response.status != 302:
            raise RuntimeError(f"logging in failed with HTTP {response.status}")
        cookies |= _set_cookies(response)
    finally:
        connection.close()
    return "; ".join(f"{k}={v}" for k, v in cookies.items())
