"""The web console in a real browser: headless Chromium (Debian's, driven by Selenium) does
what an operator does, and a real strongSwan client is the new user's phone.

The operator logs in, adds a user (the password is generated and shown once), opens the
user's QR code page and follows the link in it as the phone would, downloading the Apple
profile; the user connects with the password from the page, and the users page, left
alone, shows the user online by itself; the operator removes the user and the tunnel ends.
Screenshots of the main pages at desktop and phone widths are taken on the way; with
WEB_SCREENSHOTS=<dir> they are copied there (the README's screenshots:
`WEB_SCREENSHOTS=docs/screenshots tests/run tests/e2e/test_web_browser.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from docker.models.containers import Container

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_lab.browser import get_files, read_file, run_script, spki_pin, start_browser
from ikev2_vpn_lab.lab import Lab

HOST = "vpn.example.test"
PORT = 8443
ADMIN_PASSWORD = "browser test pw 1"
ALICE_PW = "Alice-pw-browser-1"
PAGES = ("login", "users", "added", "user", "share", "shared", "server")
WIDTHS = ("desktop", "phone")

# Runs in the browser container: the operator's visit, step by step. Each step's findings go
# to <name>.json in the home directory; the test answers through files too.
SCRIPT = r"""
import json, pathlib, sys, time
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

base, address, pin, password = sys.argv[1:5]
host = base.split("//", 1)[1].split(":", 1)[0]
work = pathlib.Path.home()
shots, downloads = work / "shots", work / "downloads"
shots.mkdir(exist_ok=True)
downloads.mkdir(exist_ok=True)


def report(name, **content):
    part = work / f"{name}.json.part"
    part.write_text(json.dumps(content))
    part.rename(work / f"{name}.json")


def wait_for(check, timeout=60.0, step=0.3):
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except WebDriverException:
            found = None
        if found or time.monotonic() > deadline:
            return found
        time.sleep(step)


def shot(name):
    for label, size in (("desktop", (1280, 900)), ("phone", (390, 844))):
        driver.set_window_size(*size)
        time.sleep(0.4)
        driver.save_screenshot(str(shots / f"{name}-{label}.png"))
    driver.set_window_size(1280, 900)


def by_id(name):
    return driver.find_element(By.ID, name)


options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for argument in (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-proxy-server",
    f"--user-data-dir={work}/profile", f"--host-resolver-rules=MAP {host} {address}",
    f"--ignore-certificate-errors-spki-list={pin}", "--window-size=1280,900",
):
    options.add_argument(argument)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.execute_cdp_cmd(
    "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
)
try:
    driver.get(base + "/")
    landed = driver.current_url
    shot("login")
    by_id("password").send_keys(password)
    by_id("login").click()
    wait_for(lambda: driver.find_elements(By.ID, "users"))
    after_login = driver.current_url
    cookies = driver.get_cookies()

    by_id("name").send_keys("erin")
    by_id("add").click()
    generated = wait_for(lambda: by_id("password").text)
    shot("added")
    by_id("to-user").click()
    wait_for(lambda: driver.find_elements(By.ID, "files"))
    files = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#files a")]
    by_id("share").click()
    qr = wait_for(lambda: by_id("qr").size["width"] > 0 and by_id("qr"))
    link = by_id("link").get_attribute("href")
    shot("share")

    driver.get(link)  # what the phone does once it has scanned the code
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#files a"))
    shot("shared")
    offered = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#files a")]
    links = driver.find_elements(By.CSS_SELECTOR, "#files a")
    [apple] = [a for a in links if "mobileconfig" in a.text]
    apple.click()
    fetched = wait_for(
        lambda: [p.name for p in downloads.iterdir() if p.suffix == ".mobileconfig"], 30
    )
    driver.get(link)
    link_after = driver.find_element(By.TAG_NAME, "body").text
    report(
        "added", landed=landed, after_login=after_login, cookies=cookies, password=generated,
        files=files, qr=bool(qr), link=link, offered=offered, fetched=fetched or [],
        link_after=link_after,
    )

    deadline = time.monotonic() + 600
    while not (work / "client-online").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    driver.get(base + "/users")
    started = time.monotonic()
    online = wait_for(
        lambda: "online" in (by_id("user-erin").get_attribute("class") or "").split(), 40
    )
    seen_after_s = time.monotonic() - started
    row = by_id("user-erin").text
    shot("users")
    driver.get(base + "/server")
    shot("server")
    driver.get(base + "/users/erin")
    shot("user")
    by_id("remove").click()
    wait_for(lambda: driver.find_elements(By.ID, "users"))
    rows = driver.find_elements(By.CSS_SELECTOR, "#users tbody tr")
    remaining = [e.get_attribute("id") for e in rows]
    report("removed", online=bool(online), seen_after_s=seen_after_s, row=row, remaining=remaining)
except Exception as error:
    report("failed", error=f"{type(error).__name__}: {error}", url=driver.current_url,
           page=driver.page_source[-3000:])
    raise
finally:
    driver.quit()
"""


def wait_report(browser: Container, name: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        for found in (name, "failed"):
            content = read_file(browser, f"/home/browser/{found}.json")
            if content is not None:
                answer: dict[str, Any] = json.loads(content)
                assert found == name, answer
                return answer
        if time.monotonic() > deadline:
            log = read_file(browser, "/home/browser/script.log") or b""
            pytest.fail(f"the browser did not report {name!r}: {log.decode()[-2000:]}")
        time.sleep(0.5)


def test_an_operator_adds_a_user_who_connects_and_is_removed(
    lab: Lab, lab_images: Any, tmp_path: Path
) -> None:
    server = lab.start_server(
        {"VPN_HOST": HOST, "VPN_USER": "alice", "VPN_WEB_PORT": str(PORT)},
        name=lab.name("web-browser"),
        volume=lab.name("web-browser-data"),
        secret_files={
            "VPN_PASSWORD_FILE": ALICE_PW.encode(),
            "VPN_WEB_PASSWORD_FILE": ADMIN_PASSWORD.encode(),
        },
    )
    address = server.egress().address
    leaf = ssl.get_server_certificate((address, PORT), timeout=10).encode()
    browser = start_browser(
        lab.engine,
        name=lab.name("browser"),
        networks=[lab.topology.egress],
        labels=eng.labels(lab.run_id, "browser"),
        image=lab_images.browser,
    )
    run_script(browser, SCRIPT, [f"https://{HOST}:{PORT}", address, spki_pin(leaf), ADMIN_PASSWORD])

    added = wait_report(browser, "added", 240)
    assert added["landed"].endswith("/login")
    assert added["after_login"].endswith("/users")
    [cookie] = added["cookies"]
    assert cookie["name"] == "__Host-session"
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    password = added["password"]
    assert len(password) >= 16
    assert "apple.mobileconfig" in added["files"]
    assert added["qr"]
    assert added["link"].startswith(f"https://{HOST}:{PORT}/s/")
    assert added["fetched"] == ["apple.mobileconfig"]
    assert "this link has ended" in added["link_after"]  # one download, then gone

    downloads = get_files(browser, "/home/browser/downloads", tmp_path / "downloads")
    [profile] = [p.read_bytes() for p in downloads if p.name == "apple.mobileconfig"]
    assert b"<string>erin</string>" in profile
    assert b"<string>" + HOST.encode() + b"</string>" in profile
    assert password.encode() not in profile  # the phone asks for it

    phone = lab.start_client(server)
    connected = phone.connect("erin", password)
    assert connected.connected, connected.error
    eng.run_checked(browser, ["touch", "/home/browser/client-online"])

    removed = wait_report(browser, "removed", 120)
    assert removed["online"], removed
    assert removed["seen_after_s"] <= 25  # the page refreshes itself every 10 s
    assert connected.virtual_ip in removed["row"]
    assert "user-erin" not in removed["remaining"]
    assert "user-alice" in removed["remaining"]
    traffic = phone.send_traffic(lab.target(server), count=2, timeout_s=2)
    assert traffic.icmp_received == 0, traffic  # the tunnel ended with the user
    assert not phone.connect("erin", password, timeout_s=15).connected

    shots = get_files(browser, "/home/browser/shots", tmp_path / "shots")
    assert {p.name for p in shots} == {f"{page}-{width}.png" for page in PAGES for width in WIDTHS}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in shots)
    if target := os.environ.get("WEB_SCREENSHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copy(shot, Path(target) / shot.name)
    logs = server.container.logs().decode()
    assert ADMIN_PASSWORD not in logs
    assert password not in logs
    phone.remove()
    browser.remove(force=True)
    server.remove()
