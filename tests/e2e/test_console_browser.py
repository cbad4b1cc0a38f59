"""The console in a real browser: Debian's ``chromium`` headless, driven by Selenium
through the system ``chromedriver``, against a real ``recloop serve`` holding a seeded
run. Every page renders without a console error, each chart draws the series and
points its page promises, the layout fits a phone's width, an admin action changes
state and a read-only key's does not; ``/docs`` and ``/redoc`` render offline.
The screenshots in ``docs/console/`` (shown by ``docs/console.md``) come from here, run
with ``RECLOOP_SCREENSHOTS=1``.

Chromium missing: skipped, or failed under ``RECLOOP_REQUIRE_SERVICES=1`` (``make test``
installs it with apt when it can).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from recloop.adapters.memory import InMemoryStateStore
from recloop.adapters.sql import SqlDatabase, SqlStateStore
from recloop.adapters.sql.history import SqlHistoryStore
from recloop.config import Settings
from recloop.core.auth import new_key
from tests.conftest import service_unavailable
from tests.console_seed import BLOCKED, MODELS, SAMPLES, seed_api, seed_history, seed_models
from tests.e2e.conftest import Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
SCREENSHOTS = (
    DOCS_SCREENSHOTS
    if os.environ.get("RECLOOP_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "recloop-console-screenshots"
)
"""Where the screenshots go: ``docs/console/`` with ``RECLOOP_SCREENSHOTS=1`` (to refresh
the docs' pictures), elsewhere otherwise (a test run leaves the tree as it was)."""
READ, READ_SHA = new_key()
ADMIN, ADMIN_SHA = new_key()
PAGES = {
    "overview": "/console",
    "experiments": "/console/experiments",
    "experiment": "/console/experiments/exp-blend",
    "algorithms": "/console/algorithms",
    "models": "/console/models",
    "guard": "/console/guard",
    "user": "/console/users?user_id=u1",
}
ALGORITHMS = len(Settings().bandit.algorithms)


def _curve_points() -> tuple[int, int]:
    """Points of the newest model's stored ROC curve and reliability diagram (seeding the
    registry is deterministic: the same as the server's)."""

    async def stored() -> dict[str, Any]:
        store = InMemoryStateStore()
        await seed_models(store)
        found = await store.get_model(MODELS[-1])
        assert found is not None
        return dict(found[0].metrics["curves"])

    curves = asyncio.run(stored())
    return len(curves["roc"]["fpr"]), len(curves["reliability"]["predicted"])


ROC, BINS = _curve_points()
CHARTS = {
    "experiment": [
        (3, 3 * 2),  # the forest: estimate, low, high of 2 comparisons (2 metrics, 2 variants)
        (3, 3 * SAMPLES),  # per metric, the anytime-valid interval over time
        (3, 3 * SAMPLES),
        (2, 2 * SAMPLES),  # power over time of each comparison
    ],
    "algorithms": [(3, 3 * ALGORITHMS)] * 4  # the posterior now, per segment
    + [(3 * ALGORITHMS, 3 * ALGORITHMS * SAMPLES)] * 4,  # and over time
    "models": [
        (3, 3 * len(MODELS)),  # auc, log loss, calibration error per model
        (2, 2 * ROC),  # the ROC curve and chance
        (2, 2 * BINS),  # the reliability diagram and the diagonal
        (4, 4 * SAMPLES),  # the canary's effect, interval, and margin over time
    ],
    "guard": [(1, 10)],  # 10 bins
}
"""(series, points) of each chart a page draws (the others draw none)."""


def _browser_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        service_unavailable(
            "chromium", "install Debian's chromium and chromium-driver (make test does)"
        )
    assert browser is not None and driver is not None
    return browser, driver


@pytest.fixture
def browser() -> Iterator[Any]:
    binary, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'recloop.db'}"
    asyncio.run(_models(url))
    keys = [
        {"name": "dashboard", "sha256": READ_SHA, "roles": ["read"]},
        {"name": "ops", "sha256": ADMIN_SHA, "roles": ["admin"]},
    ]
    s = Server(
        tmp_path,
        {
            "RECLOOP_STORAGE__URL": url,
            "RECLOOP_AUTH__KEYS": json.dumps(keys),
            "RECLOOP_FEEDBACK__IMPLICIT_FLUSH_SECONDS": "0.5",  # clicks count in the results
            "RECLOOP_CONSOLE__HISTORY_INTERVAL_SECONDS": "0",  # the seeded history only
        },
    )
    try:
        s.start(timeout=120)  # imports are slow on a busy machine
        asyncio.run(_seed(s.url))
        yield s
    finally:
        s.cleanup()


async def _models(url: str) -> None:
    db = SqlDatabase(url, "NORMAL")
    try:
        await db.migrate()
        await seed_models(SqlStateStore(db))
        await seed_history(SqlHistoryStore(db), list(Settings().bandit.algorithms), time.time())
    finally:
        await db.dispose()


async def _seed(url: str) -> None:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        await seed_api(client, list(Settings().bandit.algorithms))
        r = await client.post(f"/models/{MODELS[-1]}/deploy", json={"reason": "canary"})
        assert r.status_code == 200, r.text  # the canary whose seeded history is shown
        # Until every event is applied: each comparison then has its interval.
        deadline = time.monotonic() + 60
        while True:
            results = (await client.get("/experiments/exp-blend/results")).json()
            compared = [c for m in results["metrics"] for c in m["comparisons"]]
            if all(c["ci_relative"] is not None for c in compared):
                return
            assert time.monotonic() < deadline, results
            await asyncio.sleep(0.2)


def _origin(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


def _errors(driver: Any) -> list[dict[str, Any]]:
    """The browser's console errors since the last call (reading them clears them)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _wait(driver: Any, script: str, timeout: float = 15.0) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))


def _sign_in(driver: Any, server: Server, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(_origin(server) + "/console/login")
    driver.find_element(By.ID, "api_key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    _wait(
        driver, "return location.pathname === '/console' && !!document.getElementById('accepted')"
    )


CHART_STATE = """
return Array.from(document.querySelectorAll('[data-chart]')).map(el => ({
  id: el.id,
  drawn: el.dataset.drawn === '1',
  expectSeries: Number(el.dataset.expectSeries),
  expectPoints: Number(el.dataset.expectPoints),
  series: el.uplot ? el.uplot.series.length - 1 : -1,
  points: el.uplot ? el.uplot.data.slice(1).flat().filter(v => v != null).length : -1,
  canvas: !!el.querySelector('canvas'),
}));
"""


def _whole_page_screenshot(driver: Any, path: Path) -> None:
    """The page down to its end (at most 4,000 px), at the window's width."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 120, 1000), 4000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)


def test_every_page_in_chromium(browser: Any, server: Server) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    _sign_in(browser, server, READ)
    assert _errors(browser) == []
    for name, path in PAGES.items():
        browser.get(_origin(server) + path)
        _wait(browser, "return document.readyState === 'complete'")
        if name in CHARTS:
            _wait(
                browser,
                "return Array.from(document.querySelectorAll('[data-chart]'))"
                ".every(el => el.dataset.drawn === '1')",
            )
        charts = browser.execute_script(CHART_STATE)
        expected = CHARTS.get(name, [])
        assert [(c["expectSeries"], c["expectPoints"]) for c in charts] == expected, name
        for chart in charts:
            assert chart["drawn"] and chart["canvas"], (name, chart)
            assert chart["series"] == chart["expectSeries"], (name, chart)
            assert chart["points"] == chart["expectPoints"], (name, chart)
        assert _errors(browser) == [], name
        _whole_page_screenshot(browser, SCREENSHOTS / f"{name}.png")
    # A phone: nothing wider than the screen (wide tables scroll inside their box).
    browser.set_window_size(390, 844)
    for name in ("overview", "experiment", "guard"):
        browser.get(_origin(server) + PAGES[name])
        _wait(browser, "return document.readyState === 'complete'")
        width = browser.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert width[0] <= width[1], (name, width)
    browser.save_screenshot(str(SCREENSHOTS / "phone-guard.png"))
    browser.set_window_size(1280, 1000)
    assert _errors(browser) == []

    # A read key's action is refused, with its own valid CSRF token.
    browser.get(_origin(server) + "/console/guard")
    status = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const body = new URLSearchParams({csrf_token: document.body.dataset.csrf, user_id: 'u5'});
        fetch('/console/guard/block', {method: 'POST', body}).then(r => done(r.status));
        """
    )
    assert status == 403
    _errors(browser)  # the refused request is logged as a failed load: expected here
    assert _reliability(server, "u5") != "blocked"


def test_an_admin_blocks_a_user_in_chromium(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By

    _sign_in(browser, server, ADMIN)
    browser.get(_origin(server) + "/console/guard")
    assert BLOCKED in browser.find_element(By.ID, "blocked").text
    form = browser.find_element(By.ID, "block-form")
    form.find_element(By.NAME, "user_id").send_keys("u7")
    form.find_element(By.NAME, "reason").send_keys("seen scraping")
    form.find_element(By.CSS_SELECTOR, "button").click()
    _wait(browser, "return document.getElementById('blocked').textContent.includes('u7')")
    assert _reliability(server, "u7") == "blocked"
    assert _errors(browser) == []
    browser.save_screenshot(str(SCREENSHOTS / "guard-admin.png"))

    for path in ("/docs", "/redoc"):
        browser.get(_origin(server) + path)
        _wait(
            browser,
            "return document.body.innerText.includes('recloop') && "
            "document.body.innerText.includes('feedback')",
            timeout=30,
        )
        assert _errors(browser) == [], path


def _reliability(server: Server, user_id: str) -> str:
    r = httpx.get(
        f"{server.url}/users/{user_id}/reliability",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    r.raise_for_status()
    return str(r.json()["status"])
