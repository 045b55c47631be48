"""The browser the end-to-end tests drive (Debian's headless Chromium) and a participant's view of the pages."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SCALES = ("sync", "visual", "overall")
TIMEOUT = 20


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("SYNCMOS_REQUIRE_SERVICES"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,900", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "chromium", ignore_errors=True)


class ParticipantPage:
    """The participant's eyes and hands on the study pages: what they see and press."""

    def __init__(self, driver) -> None:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        # Pages replace each other under the waits: a vanished element just means "not yet".
        self.wait = WebDriverWait(
            driver, TIMEOUT, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
        )

    def css(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def text(self) -> str:
        return self.css("body").text

    def see(self, words: str) -> None:
        self.wait.until(lambda d: words in self.text(), f"never saw {words!r}")

    def on_clip(self, number: int, total: int) -> None:
        self.see(f"Clip {number} of {total}")
        self.wait.until(lambda d: self.css("#play").is_enabled(), "the Play button never became active")

    def play_to_end(self) -> None:
        self.css("#play").click()
        self.wait.until(lambda d: d.execute_script("return document.getElementById('clip').ended"), "clip never ended")
        self.wait.until(lambda d: all(f.is_enabled() for f in self._fieldsets()), "ratings never unlocked")

    def locked(self) -> bool:
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll('fieldset.scale')).every(f => f.disabled)"
        )

    def _fieldsets(self):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, "fieldset.scale")

    def click_option(self, scale: str, value: int) -> None:
        self.css(f'fieldset[data-scale="{scale}"] input[value="{value}"]').find_element("xpath", "..").click()

    def keys(self, *keys: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(*keys).perform()

    def chosen(self) -> dict[str, int]:
        return self.driver.execute_script(
            "const out = {}; document.querySelectorAll('fieldset.scale').forEach(f => {"
            " const c = f.querySelector('input:checked'); if (c) out[f.dataset.scale] = Number(c.value); });"
            " return out;"
        )

    def pending(self) -> object:
        return self.driver.execute_script(
            "return Object.keys(localStorage).filter(k => k.endsWith(':pending')).length"
        )

    def block(self, *urls: str) -> None:
        """Make requests to these URL patterns fail as if the network were down (none: unblock all)."""
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": list(urls)})

    def block_saving(self, blocked: bool) -> None:
        self.block(*(["*/rate"] if blocked else []))


