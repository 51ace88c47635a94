"""Browser-test fixtures: the real dashboard on a free port, tiny models, a temporary database,
Debian's chromium driven by pytest-playwright (design.md "Testing the UI in a real browser").
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import pytest

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
LOCAL = {"127.0.0.1", "localhost"}


def pytest_collection_modifyitems(config, items):
    if not Path(CHROMIUM).exists():
        skip = pytest.mark.skip(reason=f"{CHROMIUM} missing: apt-get install -y chromium (scripts/test.sh does)")
        for item in items:
            if "ui" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's chromium instead of a downloaded browser (`playwright install` fails here)."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS, "headless": True}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}, "accept_downloads": True}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def dashboard():
    """(url, db, runner): the app built by ui.build_demo, launched in this process."""
    from minillm_dash import ui  # (tests/conftest.py already pins torch to one intra-op thread)
    from minillm_dash.db import Database
    from minillm_dash.runner import Runner

    tmp = Path(tempfile.mkdtemp(prefix="minillm-ui-"))
    # Exports go to a temporary storage folder while the app runs; restored afterwards so the rest
    # of a whole-suite session is unaffected (set here, not at import: conftests import at collection).
    old_storage = os.environ.get("MINILLM_DASH_STORAGE")
    os.environ["MINILLM_DASH_STORAGE"] = str(tmp / "storage")
    db = Database(f"sqlite:///{tmp / 'ui.sqlite'}")
    db.mark_interrupted()
    runner = Runner(db, max_concurrent=2)
    demo = ui.build_demo(db, runner, max_upload_mb=1)
    demo.queue(default_concurrency_limit=4)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                allowed_paths=ui.allowed_paths(), max_file_size="1mb", css=ui.CSS)
    try:
        yield f"http://127.0.0.1:{port}/", db, runner
    finally:
        runner.shutdown(cancel=True, timeout=30)  # demo.close() does not stop our threads
        demo.close()
        db.close()
        if old_storage is None:
            os.environ.pop("MINILLM_DASH_STORAGE", None)
        else:
            os.environ["MINILLM_DASH_STORAGE"] = old_storage


@pytest.fixture
def page(page, dashboard):
    """Every request that is not to this machine is aborted (no CDN, no telemetry)."""

    def guard(route):
        host = urlparse(route.request.url).hostname
        if host in LOCAL or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", guard)
    page.set_default_timeout(20_000)
    return page
