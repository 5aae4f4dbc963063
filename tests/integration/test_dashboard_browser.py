"""The dashboard in a real browser: headless Chromium driven by Selenium against
a live two-node cluster (overview, tasks with a failure, timeline, logs,
actors), and the sign-in page of a dashboard bound beyond loopback.  Each test saves a screenshot of its page under
``$ZRAY_DASHBOARD_SCREENSHOTS`` (default: pytest's temporary folder), so a
person can look at what a user sees.

Needs Debian's ``chromium`` and ``chromium-driver`` packages and the
``selenium`` Python package (``.ci/run`` installs them); skipped, saying which
is missing, where they are not installed.
"""

from __future__ import annotations

import os
import shutil

import pytest

import zray
from zray.cluster_utils import Cluster
from tests.dashboard import MARKER, eventually, request, run_workload

pytestmark = pytest.mark.timeout(120)

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                 "google-chrome"))), None)
DRIVER = shutil.which("chromedriver") or next(
    (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
     if os.path.exists(p)), None)


def _missing() -> str | None:
    from zray import dashboard
    if not dashboard.available():
        return "the dashboard extra (aiohttp) is not installed"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if CHROMIUM is None:
        return "no Chromium browser is installed (apt-get install chromium)"
    if DRIVER is None:
        return "no chromedriver is installed (apt-get install chromium-driver)"
    return None


if _missing():
    pytest.skip(_missing(), allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = os.environ.get("ZRAY_DASHBOARD_SCREENSHOTS") or \
        str(tmp_path_factory.mktemp("dashboard-screenshots"))
    os.makedirs(folder, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def live():
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True})
    cluster.add_node(num_cpus=2)
    zray.init(address=cluster.address)
    try:
        work = run_workload(n=12)
        # the head's view catches up with the results (its bookkeeping batches)
        eventually(lambda: request(cluster.dashboard_url, f"/api/tasks/{work['failed']}")[2],
                   lambda row: isinstance(row, dict) and row.get("state") == "FAILED")
        yield cluster, work
    finally:
        zray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-proxy-server", "--window-size=1400,1000", "--hide-scrollbars",
                "--force-device-scale-factor=1"):
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=DRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser, url, wait_for_css, timeout_s=20):
    browser.get(url)
    WebDriverWait(browser, timeout_s).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, wait_for_css))
    return browser


def text_appears(browser, css, text, timeout_s=20):
    """Wait until an element matching ``css`` shows ``text`` (as rendered: CSS may
    change its case)."""
    WebDriverWait(browser, timeout_s).until(
        lambda d: any(text.lower() in e.text.lower()
                      for e in d.find_elements(By.CSS_SELECTOR, css)))


def save(browser, shots, name):
    """A screenshot of the whole page (up to 2,400 px high), as a person sees it."""
    path = os.path.join(shots, f"{name}.png")
    browser.execute_script("window.scrollTo(0, 0)")
    height = browser.execute_script("return document.body.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 1400, "height": max(600, min(int(height), 2400)), "deviceScaleFactor": 1,
        "mobile": False})
    try:
        browser.save_screenshot(path)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert os.path.getsize(path) > 10_000
    return path


def test_overview_shows_the_nodes(live, browser, shots):
    cluster, _ = live
    open_page(browser, cluster.dashboard_url + "/", "#nodes table")
    for node in cluster.list_all_nodes():
        text_appears(browser, "#nodes table", node.node_id[:12])
    text_appears(browser, "#cards", "Nodes")
    assert "2" in browser.find_element(By.CSS_SELECTOR, "#cards .card .value").text
    nav = browser.find_element(By.CSS_SELECTOR, "#nav a.active")
    assert nav.text == "Overview"
    save(browser, shots, "overview")


def test_tasks_page_shows_the_failure_and_its_traceback(live, browser, shots):
    cluster, work = live
    open_page(browser, cluster.dashboard_url + "/tasks", "#task-table table")
    text_appears(browser, "#failures", "broken on purpose")
    text_appears(browser, "#failures", "ValueError")
    assert "Traceback" in browser.find_element(By.CSS_SELECTOR, "#failures pre.traceback").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#task-table tr.failed")
    assert rows and "ValueError" in rows[0].text
    save(browser, shots, "tasks")
    rows[0].click()                                 # the task's own panel
    text_appears(browser, "#detail", work["failed"])
    save(browser, shots, "task-detail")


def test_timeline_page_renders_the_executions(live, browser, shots):
    cluster, work = live
    open_page(browser, cluster.dashboard_url + "/timeline", "svg.gantt rect.slice")
    slices = browser.find_elements(By.CSS_SELECTOR, "svg.gantt rect.slice")
    assert len(slices) >= len(work["done"])
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "svg.gantt .node-label")]
    assert len(labels) == 2                         # one group per node
    assert float(slices[0].get_attribute("width")) > 0
    save(browser, shots, "timeline")


def test_logs_page_shows_a_workers_output(live, browser, shots):
    cluster, work = live
    open_page(browser, f"{cluster.dashboard_url}/logs?pid={work['pid']}", "#sources .source")
    text_appears(browser, "#logview", MARKER)
    text_appears(browser, "#sources", f"pid {work['pid']}")
    save(browser, shots, "logs")


def test_actors_page_lists_the_actor(live, browser, shots):
    cluster, work = live
    open_page(browser, cluster.dashboard_url + "/actors", "#actor-table table")
    text_appears(browser, "#actor-table", "Greeter")
    text_appears(browser, "#actor-table", str(work["actor_pid"]))
    save(browser, shots, "actors")


def test_beyond_loopback_the_browser_signs_in_with_the_token(browser, shots):
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": True, "dashboard_host": "0.0.0.0"})
    try:
        open_page(browser, cluster.dashboard_url + "/actors", "form.login-box")
        assert not browser.find_elements(By.CSS_SELECTOR, "#nav")     # nothing shown
        save(browser, shots, "sign-in")
        browser.find_element(By.NAME, "token").send_keys("not-the-token")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        text_appears(browser, ".login-error", "not this cluster")
        browser.find_element(By.NAME, "token").send_keys(cluster.dashboard.token)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        # The sign-in's answer sends the browser back where it was: wait for
        # that page (loading current_url at once could still mean /login, and
        # would cut the sign-in short under load).
        WebDriverWait(browser, 30).until(
            lambda d: d.current_url.endswith("/actors")
            and d.find_elements(By.CSS_SELECTOR, "#actor-table"))
        # the cookie is HttpOnly: the page's scripts cannot read it
        assert browser.execute_script("return document.cookie") == ""
    finally:
        browser.delete_all_cookies()
        cluster.shutdown()
