#!/usr/bin/env python3
"""The web console (/ui) in a real browser: Debian's chromium, driven by selenium.

One daemon (the sim provider, slow enough to watch a restart), one headless browser with
JavaScript and one without. Every wait is for an element or a condition, with a deadline;
never for "network idle" (a page with a live stream never idles). On a failure the page's
screenshot and HTML are saved under the artifacts directory and the daemon's log tail is
printed.

    console.py --bin target/debug/steward                      # the test
    console.py --bin target/debug/steward --screenshots docs/img  # the README's screenshots

Run it through scripts/console-test.sh, which installs the browser and selenium.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

TOKEN = "console-test-token-5b1f"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# The sim provider takes this long to start an instance: long enough to see `provisioning`.
TEST_CONFIG = """
listen = "127.0.0.1:0"
data_dir = "{data}"
default_provider = "sim"
[providers.sim]
start_delay = "3s"
stop_delay = "200ms"
[providers.process]
enabled = false
[console]
sample_interval = "1s"
history = "1m"
"""

# A livelier daemon for the screenshots: probes every second (so a killed instance shows
# dropped restarts), fast backoff (so a broken command parks quickly), two providers.
SCREENSHOT_CONFIG = """
listen = "127.0.0.1:0"
data_dir = "{data}"
default_provider = "sim"
[providers.sim]
start_delay = "1500ms"
stop_delay = "200ms"
[providers.process]
enabled = true
default_command = ["/bin/sleep", "3600"]
[restart]
debounce_window = "30s"
settle_window = "5s"
[health]
interval = "1s"
failure_threshold = 2
[backoff]
initial = "200ms"
max = "1s"
max_failures = 2
[console]
sample_interval = "2s"
history = "2m"
"""


class Failure(Exception):
    """A step of the test did not see what it expected."""


def wait(what, condition, timeout=10.0, driver=None):
    """Polls `condition` until it returns a truthy value (returned), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last = value
        except (StaleElementReferenceException, urllib.error.URLError, KeyError) as e:
            last = repr(e)
        if time.monotonic() >= deadline:
            raise Failure(f"waiting {timeout:.0f}s for {what}; last saw {last!r}")
        time.sleep(0.05)


class Daemon:
    """`steward serve` on a free port of 127.0.0.1, in a temporary directory."""

    def __init__(self, binary, config):
        self.dir = tempfile.TemporaryDirectory(prefix="steward-console-")
        root = pathlib.Path(self.dir.name)
        self.log_path = root / "steward.log"
        (root / "steward.toml").write_text(config.format(data=root / "data"))
        env = dict(os.environ, STEWARD_ADMIN_TOKEN=TOKEN, RUST_LOG="info")
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [binary, "serve", "--config", str(root / "steward.toml")],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        addr_file = root / "data" / "listen.addr"

        def up():
            if self.process.poll() is not None:
                raise Failure(f"steward exited with {self.process.returncode}:\n{self.log_tail()}")
            return addr_file.exists() and addr_file.read_text().strip()

        addr = wait("the daemon to listen", up, timeout=30)
        self.base = f"http://{addr}"
        wait("the daemon to be ready", lambda: self.call("GET", "/readyz") is not None, timeout=30)

    def log_tail(self, lines=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def call(self, method, path, body=None):
        """The JSON answer of an API call with the admin token."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {TOKEN}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")

    def create(self, name, **fields):
        return self.call("POST", "/v1/workspaces", dict(name=name, **fields))["id"]

    def phase(self, id):
        return self.call("GET", f"/v1/workspaces/{id}")["phase"]

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        self.dir.cleanup()


def browser(javascript=True, height=900):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", f"--window-size=1280,{height}", "--hide-scrollbars"):
        options.add_argument(arg)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    return driver


def text(driver, element_id):
    found = driver.find_elements(By.ID, element_id)
    return found[0].text if found else None


def attribute(driver, css, name):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].get_attribute(name) if found else None


def log_in(driver, daemon, token=TOKEN, landing="/ui/workspaces"):
    driver.get(daemon.base + landing)
    wait("the login page", lambda: "/ui/login" in driver.current_url
         and driver.find_elements(By.ID, "token"))
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button").click()


class Run:
    """Steps of the test; a failed step leaves its page's screenshot and HTML behind."""

    def __init__(self, daemon, artifacts):
        self.daemon = daemon
        self.artifacts = pathlib.Path(artifacts)
        self.failed = []

    def step(self, name, driver, body):
        started = time.monotonic()
        try:
            body()
            print(f"ok   {name} ({time.monotonic() - started:.1f}s)", flush=True)
            return True
        except Exception as e:  # noqa: BLE001 - any failure of a step is reported the same way
            self.failed.append(name)
            self.artifacts.mkdir(parents=True, exist_ok=True)
            stem = self.artifacts / name.replace(" ", "-").replace("/", "-")[:80]
            try:
                driver.save_screenshot(str(stem.with_suffix(".png")))
                stem.with_suffix(".html").write_text(driver.page_source)
            except Exception:  # noqa: BLE001 - the browser may be gone too
                pass
            print(f"FAIL {name}: {e}", flush=True)
            if not isinstance(e, Failure):
                traceback.print_exc()
            print(f"     screenshot: {stem.with_suffix('.png')}\n     daemon log tail:\n"
                  f"{self.daemon.log_tail()}", flush=True)
            return False


def test(daemon, artifacts):
    run = Run(daemon, artifacts)
    alpha = daemon.create("alpha", env={"PLAIN": "env-value-7f3a"},
                          secrets={"API_KEY": "secret-value-9c1d"})
    beta = daemon.create("beta")
    gamma = daemon.create("gamma")
    for id in (alpha, beta, gamma):
        wait("the workspaces to run", lambda: daemon.phase(id) == "running", timeout=20)
    row_phase = lambda d, id: attribute(d, f"#row-{id}", "data-phase")  # noqa: E731
    summary_phase = lambda d: attribute(d, "#ws-summary", "data-phase")  # noqa: E731

    d = browser(javascript=True)
    try:
        def wrong_token():
            log_in(d, daemon, token="not-the-admin-token")
            error = wait("the login error", lambda: text(d, "login-error"))
            if "not the admin token" not in error:
                raise Failure(f"login error says {error!r}")
            if "not-the-admin-token" in d.page_source or "not-the-admin-token" in d.current_url:
                raise Failure("the typed token shows on the page or in the URL")

        def list_page():
            d.find_element(By.ID, "token").send_keys(TOKEN)
            d.find_element(By.CSS_SELECTOR, "form[action='/ui/login'] button").click()
            wait("the list", lambda: d.current_url.endswith("/ui/workspaces"))
            for id in (alpha, beta, gamma):
                wait(f"row {id} running", lambda: row_phase(d, id) == "running")
            wait("the live stream to open", lambda: text(d, "live") == "live")
            if TOKEN in d.page_source or TOKEN in d.current_url:
                raise Failure("the admin token shows on the page or in the URL")

        def restart_live():
            d.execute_script("window.consoleTestMarker = 'same page'")
            d.find_element(By.CSS_SELECTOR, f"#row-{alpha} button.restart").click()
            # Within 2 s of the click, without a reload.
            wait("the row to show provisioning", lambda: row_phase(d, alpha) == "provisioning",
                 timeout=2)
            wait("the row to show running", lambda: row_phase(d, alpha) == "running", timeout=15)
            if d.execute_script("return window.consoleTestMarker") != "same page":
                raise Failure("the page was reloaded")
            flash = wait("the action's message", lambda: text(d, "flash"))
            if "alpha: restart: started" not in flash:
                raise Failure(f"message {flash!r}")

        def workspace_page():
            d.find_element(By.LINK_TEXT, "alpha").click()
            wait("alpha's page", lambda: d.current_url.endswith(f"/ui/workspaces/{alpha}"))
            wait("the restart in the timeline", lambda: d.find_elements(
                By.CSS_SELECTOR, "#timeline li[data-kind='restart_requested']"))
            wait("the inspection", lambda: "Cycles" in (text(d, "ws-inspect") or ""))
            source = d.page_source
            for never in ("secret-value-9c1d", "env-value-7f3a", TOKEN):
                if never in source:
                    raise Failure(f"the page shows {never}")
            for shown in ("API_KEY", "PLAIN"):
                if shown not in source:
                    raise Failure(f"the page does not show the key {shown}")
            wait("the live stream to open", lambda: text(d, "live") == "live")
            # textContent: what the panel holds, scrolled out of view or not.
            logs = lambda: (attribute(d, "#ws-logs", "textContent") or "").rstrip("\n")  # noqa: E731
            if "sim: generation 2 up, serving" not in logs():
                raise Failure(f"the log panel shows {logs()!r}")
            newest = int(attribute(d, "#timeline li", "id").removeprefix("ev-"))
            daemon.call("POST", f"/v1/workspaces/{alpha}/restart")  # behind the page's back
            wait("the new events on top", lambda: int(
                attribute(d, "#timeline li", "id").removeprefix("ev-")) > newest)
            wait("the summary to show provisioning", lambda: summary_phase(d) == "provisioning")
            wait("the summary to show running", lambda: summary_phase(d) == "running", timeout=15)
            wait("the new log lines, live", lambda: logs().endswith(
                "sim: generation 2 stopping (SIGTERM)\nsim: generation 3 starting\n"
                "sim: generation 3 up, serving"))
            d.find_element(By.LINK_TEXT, "Failures").click()
            wait("the failures tab", lambda: "events=failures" in d.current_url
                 and "No events here." in (text(d, "timeline") or ""))

        def logout():
            d.find_element(By.CSS_SELECTOR, "form[action='/ui/logout'] button").click()
            wait("the login page", lambda: "/ui/login" in d.current_url)
            d.get(daemon.base + "/ui/workspaces")
            wait("the session to be over", lambda: "/ui/login" in d.current_url)

        for name, body in (("a wrong token is refused on the page", wrong_token),
                           ("logging in shows the list, live", list_page),
                           ("Restart turns the row provisioning then running, no reload",
                            restart_live),
                           ("the workspace page shows the event and the log lines, live", workspace_page),
                           ("logging out ends the session", logout)):
            if not run.step(name, d, body):
                break
    finally:
        d.quit()

    nojs = browser(javascript=False)
    try:
        def without_javascript():
            log_in(nojs, daemon, landing=f"/ui/workspaces/{beta}")
            wait("beta's page", lambda: nojs.current_url.endswith(f"/ui/workspaces/{beta}"))
            if text(nojs, "live") != "not live":
                raise Failure("the script ran: JavaScript is not disabled")
            nojs.find_element(By.CSS_SELECTOR, "#ws-summary button.stop").click()
            flash = wait("the stop's message after the redirect", lambda: text(nojs, "flash"))
            if "beta: stop:" not in flash or not nojs.current_url.endswith(beta):
                raise Failure(f"after the stop: {nojs.current_url} says {flash!r}")

            def stopped():
                nojs.refresh()
                return summary_phase(nojs) == "stopped"
            wait("beta to show stopped after a reload", stopped, timeout=15)
            nojs.get(f"{daemon.base}/ui/workspaces/{gamma}")
            nojs.find_element(By.CSS_SELECTOR, "#ws-summary a[href$='/delete']").click()
            wait("the confirmation page", lambda: nojs.find_elements(By.ID, "confirm-delete"))
            nojs.find_element(By.CSS_SELECTOR, "#confirm-delete button").click()
            flash = wait("the delete's message on the list", lambda: text(nojs, "flash"))
            if "gamma: delete:" not in flash or not nojs.current_url.endswith("/ui/workspaces"):
                raise Failure(f"after the delete: {nojs.current_url} says {flash!r}")

        run.step("without JavaScript, actions are forms and redirects", nojs, without_javascript)
    finally:
        nojs.quit()
    return run.failed


def screenshots(daemon, out):
    """Regenerates the README's screenshots from a daemon with a few busy workspaces."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = ["research-agent", "support-bot-eu", "support-bot-us", "code-review",
             "nightly-evals", "doc-writer", "triage", "sandbox-7"]
    ids = {n: daemon.create(n, model="small", env={"REGION": "eu"},
                            secrets={"API_KEY": "x"}) for n in names}
    ids["legacy-tool"] = daemon.create("legacy-tool", provider="process",
                                       command=["/nonexistent/legacy-tool"])
    for n in names:
        wait(f"{n} to run", lambda: daemon.phase(ids[n]) == "running", timeout=30)
    hero = ids["research-agent"]
    daemon.call("PUT", f"/v1/workspaces/{hero}/model", {"model": "large"})
    wait("the model change to run", lambda: daemon.phase(hero) == "running", timeout=30)
    daemon.call("PUT", f"/v1/workspaces/{hero}/secrets/API_KEY", {"value": "rotated"})
    wait("the secret change to run", lambda: daemon.phase(hero) == "running", timeout=30)
    daemon.call("POST", f"/v1/admin/workspaces/{hero}/kill")  # inside the debounce window
    wait("a dropped restart", lambda: any(
        e["type"] == "restart_dropped"
        for e in daemon.call("GET", f"/v1/workspaces/{hero}/events")["events"]), timeout=30)
    daemon.call("POST", f"/v1/workspaces/{ids['sandbox-7']}/stop")
    wait("legacy-tool to be parked", lambda: daemon.phase(ids["legacy-tool"]) == "failed",
         timeout=30)

    d = browser(javascript=True, height=800)
    try:
        log_in(d, daemon)
        wait("the list", lambda: d.current_url.endswith("/ui/workspaces")
             and text(d, "live") == "live")
        for n in ("support-bot-eu", "nightly-evals"):
            daemon.call("POST", f"/v1/workspaces/{ids[n]}/restart")
        wait("a restart in flight", lambda: attribute(
            d, f"#row-{ids['support-bot-eu']}", "data-phase") == "provisioning")
        d.save_screenshot(str(out / "console-list.png"))
        d.get(f"{daemon.base}/ui/workspaces/{hero}")
        wait("the page, live", lambda: text(d, "live") == "live")
        d.set_window_size(1280, 1750)
        d.save_screenshot(str(out / "console-workspace.png"))
        d.set_window_size(1280, 900)
        d.get(f"{daemon.base}/ui/overview")
        wait("a few samples", lambda: len(d.find_elements(
            By.CSS_SELECTOR, "#chart-phases svg g")) >= 12, timeout=40)
        d.save_screenshot(str(out / "console-overview.png"))
    finally:
        d.quit()
    print(f"screenshots written to {out}/console-{{list,workspace,overview}}.png")
    return []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", required=True, help="the steward binary")
    parser.add_argument("--artifacts", default="target/console-test",
                        help="where a failure leaves its screenshot and page")
    parser.add_argument("--screenshots", metavar="DIR",
                        help="write the README's screenshots to DIR instead of testing")
    args = parser.parse_args()
    started = time.monotonic()
    daemon = Daemon(args.bin, SCREENSHOT_CONFIG if args.screenshots else TEST_CONFIG)
    try:
        failed = screenshots(daemon, args.screenshots) if args.screenshots else test(
            daemon, args.artifacts)
    except (Failure, TimeoutException) as e:
        print(f"FAIL {e}\ndaemon log tail:\n{daemon.log_tail()}", flush=True)
        failed = ["setup"]
    finally:
        daemon.stop()
    print(f"console browser test: {'FAILED ' + ', '.join(failed) if failed else 'ok'} "
          f"in {time.monotonic() - started:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
