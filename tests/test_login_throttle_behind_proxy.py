"""Login throttling behind the documented proxy: a client that sends a new
X-Forwarded-For with every try is still locked out.

The live test runs the Procfile's web command with the environment of
docs/deployment.md and sends each login the X-Forwarded-For that the nginx site of
that page would pass on.
"""

from __future__ import annotations

import http.cookiejar
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.urls import reverse

from bench.server import free_port, manage, wait_until_serving
from tests.conftest import ROOT
from tests.e2e.conftest import server_env

CLIENT = "127.0.0.1"  # the address nginx sees: this test's own connection
LOCKED = "Too many failed logins"


def procfile_web_command(port: int) -> list[str]:
    """The Procfile's web line, on loopback and this interpreter."""
    line = re.search(r"^web: (.+)$", (ROOT / "Procfile").read_text(), re.M)
    assert line is not None
    command = line.group(1).replace("python ", f"{sys.executable} ", 1).replace("-b 0.0.0.0", f"-b {CLIENT}")
    return ["bash", "-c", command.replace("${PORT:-8000}", str(port))]


def documented_forwarded_for() -> set[str]:
    """The value(s) the nginx site in docs/deployment.md gives X-Forwarded-For."""
    return set(re.findall(r"proxy_set_header X-Forwarded-For (\S+);", (ROOT / "docs/deployment.md").read_text()))


def nginx_forwarded_for(value: str, *, sent: str, remote_addr: str) -> str:
    """What nginx passes upstream for ``proxy_set_header X-Forwarded-For VALUE``."""
    if value == "$remote_addr":
        return remote_addr
    if value == "$proxy_add_x_forwarded_for":  # the client's header, then the address nginx saw
        return f"{sent}, {remote_addr}" if sent else remote_addr
    raise AssertionError(f"this test does not know nginx's {value}")


@pytest.fixture(scope="module")
def proxied_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("proxied-site")
    env = server_env(tmp, PARLEY_PROXY_COUNT="1")  # as docs/deployment.md sets it
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "collectstatic", "--noinput", "-v", "0")
    manage(env, "shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('alice', password='correct horse battery')")
    port = free_port()
    with open(tmp / "server.log", "wb") as log:
        process = subprocess.Popen(procfile_web_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{CLIENT}:{port}"
    wait_until_serving(f"{url}/accounts/login/", process)
    yield url
    process.terminate()
    process.wait(timeout=20)


def log_in(url: str, password: str, forwarded_for: str) -> tuple[int, str]:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{url}/accounts/login/", timeout=30).read()
    token = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
    form = {"username": "alice", "password": password, "csrfmiddlewaretoken": token}
    request = urllib.request.Request(
        f"{url}/accounts/login/",
        data=urllib.parse.urlencode(form).encode(),
        headers={"Referer": f"{url}/accounts/login/", "X-Forwarded-For": forwarded_for},
    )
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_rotating_x_forwarded_for_through_the_documented_setup_is_locked_out(proxied_site) -> None:
    (value,) = documented_forwarded_for()
    answers = []
    for attempt in range(8):
        claimed = f"198.51.100.{attempt + 1}"  # a new "address" every try
        answers.append(log_in(proxied_site, "wrong guess", nginx_forwarded_for(value, sent=claimed, remote_addr=CLIENT)))
    assert [status for status, _ in answers[:4]] == [200] * 4, "four wrong passwords are just wrong"
    assert all(status == 429 and LOCKED in page for status, page in answers[5:]), "then the account is locked"
    status, page = log_in(proxied_site, "correct horse battery", nginx_forwarded_for(value, sent="203.0.113.9", remote_addr=CLIENT))
    assert (status, LOCKED in page) == (429, True), "even the right password waits out the lockout"


def test_a_proxy_that_appends_still_cannot_pick_the_address(client, alice, settings) -> None:
    """With nginx appending, daphne's --proxy-headers gives the client's claim as
    REMOTE_ADDR; the throttle reads the right-most entry, which the proxy wrote."""
    settings.PARLEY_PROXY_COUNT = 1
    statuses = []
    for attempt in range(7):
        claimed = f"198.51.100.{attempt + 1}"
        response = client.post(
            reverse("login"),
            {"username": "alice", "password": "wrong guess"},
            REMOTE_ADDR=claimed,
            HTTP_X_FORWARDED_FOR=f"{claimed}, {CLIENT}",
        )
        statuses.append(response.status_code)
    assert statuses[:4] == [200] * 4 and statuses[5:] == [429, 429]
