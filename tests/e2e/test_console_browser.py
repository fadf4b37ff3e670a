"""The ops console in a real browser (Debian's chromium, driven by selenium), served by the pyz's `dev`.

An operator logs in, finds an enrolment, opens it; then, as in "a supplier
says their enrolment failed", finds the rejection by the company's name, reads
its payload, erases the registration made by mistake under the same number,
re-drives the rejection and sees it created, and the audit of both. The test also takes docs/operating.md's
screenshots of the overview and rejections pages: into docs/ with
DOCS_SCREENSHOTS=1 (then commit them), else beside the test's logs.
Under CI=true a missing chromium fails the test; elsewhere it skips.
"""

import base64
import json
import os
import shutil
from pathlib import Path

import pytest
import requests

from tests.factories import enrolment_payload
from tests.support.checkout import IN_CI
from tests.support.enrolling import DEBUG_SECRET, enrolment_status, post_enrolment
from tests.support.processes import start_dev
from tests.support.waits import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DESKTOP = (1280, 900)
PHONE = (390, 844)


@pytest.fixture
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        message = f"{' and '.join(missing)} not found: apt-get install chromium chromium-driver (.ci/run does)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={DESKTOP[0]},{DESKTOP[1]}", "--hide-scrollbars", "--lang=en-GB"):
        options.add_argument(argument)
    # Everything local: no component updates, no selenium-manager download.
    os.environ.setdefault("SE_OFFLINE", "true")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    driver.implicitly_wait(10)  # find_element waits for the page a click or a submit brought
    yield driver
    driver.quit()


def log_in(driver, password: str) -> None:
    """HTTP Basic as the browser sends it once the operator has typed user and password into its prompt."""
    token = base64.b64encode(f"ops:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})


def shows(driver, text: str, timeout: float = 15) -> None:
    """Wait until the page (the next one, after a click or a submit) shows `text`."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: text in d.page_source, f"the page never showed {text!r}")


def screenshot(driver, name: str, tmp_path: Path, size=DESKTOP) -> Path:
    """The whole page at `size` (a phone's emulated as one, viewport meta and all)."""
    target_dir = ROOT / "docs" if os.environ.get("DOCS_SCREENSHOTS") == "1" else tmp_path
    width, height = size
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": size == PHONE}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    page_height = driver.execute_script("return document.documentElement.scrollHeight")
    height = min(max(height, page_height), 3000)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": height})
    path = target_dir / name
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path


# Each word of each value of a card (a list's row is one on a phone) that the browser laid out on two lines.
# A word ends at a space, after a hyphen or at a <wbr> (a text node of its own), where breaking is fine.
BROKEN_WORDS_JS = """
const broken = [];
for (const cell of document.querySelectorAll('.card dd, .card td, .card th, .list td')) {
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const match of node.data.matchAll(/[^\\s-]+-?/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const tops = new Set([...range.getClientRects()].map(rect => Math.round(rect.top)));
      if (tops.size > 1) broken.push(match[0]);
    }
  }
}
return broken;
"""


def broken_words(driver, size) -> list[str]:
    """The words of the cards broken across lines at `size` (width, height)."""
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": size == PHONE})
    try:
        return driver.execute_script(BROKEN_WORDS_JS)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def no_word_broken(driver) -> None:
    for size in (DESKTOP, PHONE):
        assert broken_words(driver, size) == [], f"words broken mid-word at {size[0]} px on {driver.current_url}"


def test_an_operator_finds_an_enrolment_and_redrives_a_rejection_to_created(
    browser, cli, base_env, processes, tmp_path
):
    from selenium.webdriver.common.by import By

    workdir = tmp_path / "dev"
    workdir.mkdir()
    dev, base_url = start_dev(processes, cli, base_env, workdir)

    # Enrolments as directory-ui sends them; one repeats a registered company and is set aside.
    for n, name in enumerate(["Acme Widgets Ltd", "Bright Lamps Ltd", "Coastal Ropes & Sails Ltd",
                              '<script>alert("not run")</script> Ltd']):
        post_enrolment(base_url, enrolment_payload(100 + n, company_number=f"SC10000{n}", company_name=name))
    payload = enrolment_payload(200, company_number="SC100000", company_name="Acme Widgets (Scotland) Ltd")
    taken = post_enrolment(base_url, payload)
    post_enrolment(base_url, enrolment_payload(201, sso_id=101))  # a user already a supplier
    wait_until(lambda: enrolment_status(base_url, taken)["status"] == "rejected", 30, "the repeat to be set aside")

    assert requests.get(f"{base_url}/ops/", timeout=10).status_code == 401  # no password, no console
    log_in(browser, DEBUG_SECRET)
    browser.get(f"{base_url}/ops/")
    shows(browser, "<h1>Overview</h1>")
    wait_until(lambda: browser.refresh() or "<td class=\"number\">4</td>" in browser.page_source, 30,
               "the overview to count four enrolments")
    screenshot(browser, "console-overview.png", tmp_path)
    screenshot(browser, "console-overview-phone.png", tmp_path, size=PHONE)
    no_word_broken(browser)

    # Find the company by its number, open its enrolment.
    search = browser.find_element(By.ID, "q")
    search.send_keys("sc100003")
    search.submit()
    shows(browser, '&lt;script&gt;alert("not run")&lt;/script&gt; Ltd')  # shown, escaped, not run
    browser.find_element(By.LINK_TEXT, "SC100003").click()
    shows(browser, "<h1>Enrolment ")
    assert "company103@example.com" in browser.page_source.replace("<wbr>", "")
    no_word_broken(browser)

    browser.find_element(By.LINK_TEXT, "Rejections").click()
    shows(browser, "Acme Widgets (Scotland) Ltd")  # whose it was, beside why
    screenshot(browser, "console-rejections.png", tmp_path)

    # The supplier says their enrolment failed: find it by the company's name, read why and what was sent.
    browser.find_element(By.LINK_TEXT, "Enrolments").click()
    search = browser.find_element(By.ID, "q")
    search.send_keys("acme widgets (scotland)")
    search.submit()
    shows(browser, "<h2>Rejections</h2>")
    browser.find_element(By.LINK_TEXT, taken).click()
    shows(browser, "A company with this number is already registered.")
    payload_text = browser.find_element(By.CSS_SELECTOR, "pre.payload").text
    assert json.loads(payload_text) == payload  # the payload as received, readable
    screenshot(browser, "console-rejection.png", tmp_path)

    # The cause put right: the company registered by mistake under that number is erased, after a confirmation.
    browser.find_element(By.LINK_TEXT, "Find what is registered under these").click()
    browser.find_element(By.LINK_TEXT, "SC100000").click()
    shows(browser, "Acme Widgets Ltd")
    browser.find_element(By.PARTIAL_LINK_TEXT, "Erase this supplier").click()
    shows(browser, "What will go")
    assert "company number <strong>SC100000</strong>" in browser.page_source
    browser.find_element(By.XPATH, "//button[text()='Erase this personal data']").click()
    shows(browser, "Erased: ")
    notice = browser.find_element(By.CSS_SELECTOR, ".notice.done").text
    # Of the two rejections holding its number or its sso id, the same user's later post goes; the one to re-drive
    # is another person's (another sso id) and keeps its payload.
    assert notice == "Erased: company 1, supplier 1, enrolment 1, email 1, rejection 1."

    browser.find_element(By.LINK_TEXT, "Rejections").click()
    shows(browser, "A company with this number is already registered.")
    no_word_broken(browser)

    row = browser.find_element(By.XPATH, f"//tr[.//code[text()='{taken}']]")
    row.find_element(By.XPATH, ".//button[text()='Re-drive']").click()
    shows(browser, f"Re-driven: {taken}.")

    def created():
        browser.get(f"{base_url}/ops/rejections")
        return "created: enrolment" in browser.page_source

    wait_until(created, 30, "the re-driven message to be saved")
    browser.find_element(By.PARTIAL_LINK_TEXT, "created: enrolment").click()
    shows(browser, "Acme Widgets (Scotland) Ltd")
    assert taken in browser.page_source  # saved under its original message id
    assert "saved as enrolment" in browser.page_source  # its history: re-driven from the console, and saved
    # dev has no EMAIL_HOST: its confirmation e-mail is logged, and the page says so in words.
    wait_until(lambda: browser.refresh() or "not sent: no EMAIL_HOST set" in browser.page_source, 15,
               "the e-mail's state in words")
    assert enrolment_status(base_url, taken)["status"] == "created"
    browser.find_element(By.LINK_TEXT, "Audit").click()
    shows(browser, "removed company 1, supplier 1")
    assert "console from 127.0.0.1" in browser.page_source
