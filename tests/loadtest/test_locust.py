"""The Locust user against a real server: headless, distributed, and against a server that answers wrongly."""

from __future__ import annotations

import json
import signal
import time
import urllib.parse
import urllib.request

import pytest

from loadtest.servers import RunningServer, ServerSpec
from tests.hardening.harness import wait_until
from tests.loadtest.locustrun import failures, finish, free_port, start_locust, stats, stop
from tests.serverproc import quiet, running_server
from tests.tlskit import make_cert, needs_openssl

pytestmark = pytest.mark.timeout(180)

CARELESS = ServerSpec("careless", "careless peer", "tests.loadtest.careless_peer")


def _count(table: dict[str, dict[str, str]], name: str, column: str = "Request Count") -> int:
    return int(table[name][column]) if name in table else 0


def test_headless_run_checks_every_reply_and_has_no_failure(tmp_path):
    prefix = tmp_path / "run"
    with running_server(*quiet()) as srv:
        proc = start_locust(
            "--headless",
            "-u", "20",
            "-r", "20",
            "-t", "4s",
            "--host", f"tcp://{srv.host}:{srv.port}",
            "--csv", str(prefix),
            "--html", str(tmp_path / "run.html"),
            "--message-size", "300",
            "--disconnect-rate", "0.1",
            "--think-time", "0.01",
            cwd=tmp_path,
        )  # fmt: skip
        code, output = finish(proc, timeout=120)
    assert code == 0, output[-3000:]
    table = stats(prefix)
    assert _count(table, "Aggregated") > 0
    assert _count(table, "Aggregated", "Failure Count") == 0, failures(prefix)
    for name in ("connect", "echo", "echo unicode", "DESCONEXION"):
        assert _count(table, name) > 0, f"no {name!r} request in {sorted(table)}"
    assert failures(prefix) == []
    assert "<html" in (tmp_path / "run.html").read_text(encoding="utf-8").lower()


@needs_openssl
def test_headless_run_over_tls_has_no_failure(tmp_path):
    """O6: ``--host tls://`` speaks TLS, the certificate checked against ``--tls-cafile``."""
    cert = make_cert(tmp_path)
    prefix = tmp_path / "tls"
    with running_server(*quiet(*cert.server_args())) as srv:
        proc = start_locust(
            "--headless",
            "-u", "10",
            "-r", "10",
            "-t", "4s",
            "--host", f"tls://localhost:{srv.port}",
            "--tls-cafile", str(cert.cert),
            "--csv", str(prefix),
            "--disconnect-rate", "0.1",
            "--think-time", "0.01",
            cwd=tmp_path,
        )  # fmt: skip
        code, output = finish(proc, timeout=120)
    assert code == 0, output[-3000:]
    table = stats(prefix)
    for name in ("connect", "echo", "echo unicode", "DESCONEXION"):
        assert _count(table, name) > 0, f"no {name!r} request in {sorted(table)}"
    assert _count(table, "Aggregated", "Failure Count") == 0, failures(prefix)
    assert failures(prefix) == []


def test_distributed_run_with_one_master_and_two_workers(tmp_path):
    """The master's options reach the workers: with --disconnect-rate 1 every echo is followed by DESCONEXION."""
    prefix = tmp_path / "dist"
    with running_server(*quiet()) as srv:
        for _attempt in range(3):
            port = str(free_port())
            master = start_locust(
                "--master",
                "--master-bind-host", "127.0.0.1",
                "--master-bind-port", port,
                "--expect-workers", "2",
                "--headless",
                "-u", "20",
                "-r", "20",
                "-t", "5s",
                "--host", f"tcp://{srv.host}:{srv.port}",
                "--csv", str(prefix),
                "--disconnect-rate", "1",
                "--think-time", "0.01",
                cwd=tmp_path,
            )  # fmt: skip
            workers = [
                start_locust("--worker", "--master-host", "127.0.0.1", "--master-port", port, cwd=tmp_path)
                for _ in range(2)
            ]
            try:
                code, output = finish(master, timeout=150)
                results = [finish(worker, timeout=60) for worker in workers]
            finally:
                stop([master, *workers])
            if code != 0 and "in use" in output:
                continue  # another process took the port between our check and the master's bind
            break
    assert code == 0, output[-3000:]
    for worker_code, worker_output in results:
        assert worker_code == 0, worker_output[-3000:]
    table = stats(prefix)
    echoes = _count(table, "echo") + _count(table, "echo unicode")
    assert echoes > 0
    assert _count(table, "Aggregated", "Failure Count") == 0, failures(prefix)
    assert _count(table, "DESCONEXION") >= echoes // 2, table


def test_a_wrong_reply_is_a_failure_that_says_what_differs(tmp_path):
    prefix = tmp_path / "wrong"
    wanted = "reply differs from the upper-cased message: expected"

    def reported() -> bool:
        try:
            return any(wanted in row["Error"] for row in failures(prefix))
        except (OSError, KeyError):
            return False  # not written yet (Locust rewrites its CSV files every second)

    with RunningServer(CARELESS) as careless:
        host, port = careless.wait_started()
        proc = start_locust(
            "--headless",
            "-u", "4",
            "-r", "4",
            "-t", "120s",  # stopped below as soon as the failure is on record, however slow the machine
            "--host", f"tcp://{host}:{port}",
            "--csv", str(prefix),
            "--disconnect-rate", "0",
            "--think-time", "0.01",
            cwd=tmp_path,
        )  # fmt: skip
        try:
            wait_until(lambda: reported() or proc.poll() is not None, 120, "a failure row from Locust")
        finally:
            proc.send_signal(signal.SIGTERM)  # a headless run stops, writes its CSV files and exits
            code, output = finish(proc, timeout=60)
    assert code == 1, output[-3000:]
    errors = [row["Error"] for row in failures(prefix)]
    assert any(wanted in error for error in errors), (errors, output[-3000:])
    assert _count(stats(prefix), "Aggregated", "Failure Count") > 0


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def _post(url: str, form: dict[str, str]) -> dict:
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(url, data=data, timeout=10) as response:
        return json.loads(response.read())


def _page(base: str, proc, deadline: float) -> str | None:
    """The web UI's front page once it answers; None if Locust exited first (its port was taken)."""
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            return _get(base + "/").decode()
        except OSError:
            time.sleep(0.1)  # not listening yet
    return None


def test_web_ui_lists_the_options_and_runs_a_swarm(tmp_path):
    with running_server(*quiet()) as srv:
        host = f"tcp://{srv.host}:{srv.port}"
        for _attempt in range(3):
            port = str(free_port())
            base = f"http://127.0.0.1:{port}"
            ui = start_locust("--web-host", "127.0.0.1", "--web-port", port, "--host", host, cwd=tmp_path)
            try:
                deadline = time.monotonic() + 60
                page = _page(base, ui, deadline)
                if page is None:
                    continue
                for option in ("message_size", "disconnect_rate", "think_time", "reply_timeout"):
                    assert f'"{option}"' in page, f"--{option} is not offered in the web UI"
                form = {"user_count": "5", "spawn_rate": "5", "host": host, "message_size": "50"}
                started = _post(base + "/swarm", form)
                assert started["success"], started
                total: dict = {}
                while time.monotonic() < deadline:
                    total = json.loads(_get(base + "/stats/requests"))["stats"][-1]
                    if total["num_requests"] >= 50:
                        break
                    time.sleep(0.1)
                _post(base + "/stop", {})
                assert total["num_requests"] >= 50, total
                assert total["num_failures"] == 0, total
                return
            finally:
                stop([ui])
        pytest.fail("the web UI did not come up on any of three ports")


def test_a_bad_option_stops_a_headless_run_at_once_with_one_clear_line(tmp_path):
    proc = start_locust(
        "--headless", "-u", "2", "-r", "2", "-t", "600s", "--host", "tcp://127.0.0.1:1", "--message-size", "-5",
        cwd=tmp_path,
    )  # fmt: skip
    code, output = finish(proc, timeout=90)  # not the 600 s run: it never starts
    assert code == 2, output[-3000:]
    assert "--message-size must be at least 0, got -5" in output
    assert "Traceback" not in output


def test_web_ui_refuses_a_swarm_with_a_bad_option_and_labels_say_each_default_once(tmp_path):
    with running_server(*quiet()) as srv:
        host = f"tcp://{srv.host}:{srv.port}"
        for _attempt in range(3):
            port = str(free_port())
            base = f"http://127.0.0.1:{port}"
            ui = start_locust("--web-host", "127.0.0.1", "--web-port", port, "--host", host, cwd=tmp_path)
            try:
                page = _page(base, ui, time.monotonic() + 60)
                if page is None:
                    continue
                assert '"longest message in characters"' in page  # the label; the field holds the default
                assert "(default" not in page
                form = {"user_count": "5", "spawn_rate": "5", "host": host, "message_size": "-5"}
                refused = _post(base + "/swarm", form)
                assert refused["success"] is False
                assert refused["message"] == "--message-size must be at least 0, got -5"
                assert json.loads(_get(base + "/stats/requests"))["state"] == "ready"  # nobody is spawning
                started = _post(base + "/swarm", {**form, "message_size": "20"})
                assert started["success"], started
                _post(base + "/stop", {})
                ui.terminate()
                _, output = finish(ui, timeout=30)
            finally:
                stop([ui])
            assert "swarm refused: --message-size must be at least 0, got -5" in output
            assert "Traceback" not in output, output[-3000:]
            return
        pytest.fail("the web UI did not come up on any of three ports")
