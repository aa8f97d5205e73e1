"""The web console's memory, idle and under 50 browsers at once, on a real server.

Fifty browsers (ten lab containers, five each: within the console's eight connections per
address) each log in with the form, as a person would (the login page, its CSRF token, the
password, the session cookie), then load the users page, its stylesheet, the server page
and the users page again, on one kept-alive HTTPS connection. Every page must arrive; the
server process's resident memory (it runs the console) is sampled idle, while the
browsers are at it (the largest sample), and after, and must stay within bounds.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ikev2_vpn_helper import engine as eng
from ikev2_vpn_lab.lab import Lab

HOST = "vpn.example.test"
PORT = 8443
ADMIN_PASSWORD = "load test pw 12"
BROWSERS, CONTAINERS = 50, 10
IDLE_COST_MIB = 32  # what the console costs idle: measured +6 MiB (Flask and its templates)
GROWTH_MIB = 96  # measured +68 MiB: two scrypt checks at once take 32 MiB each

# Runs in a lab container: `count` browsers at once against the console; prints, as JSON,
# each browser's status codes.
BROWSE = r"""
import http.client, json, re, ssl, sys, threading, urllib.parse
address, port, password, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
results = []

def browse():
    codes, cookie = [], ""
    try:
        conn = http.client.HTTPSConnection(address, port, context=context, timeout=60)
        def get(path, body=None):
            nonlocal cookie
            headers = {"Host": "vpn.example.test", "Referer": f"https://vpn.example.test:{port}/"}
            if cookie:
                headers["Cookie"] = cookie
            if body is not None:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
            answer = conn.getresponse()
            text = answer.read().decode(errors="replace")
            for value in answer.headers.get_all("Set-Cookie") or []:
                cookie = value.split(";", 1)[0]
            codes.append(answer.status)
            return text
        page = get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        get("/login", urllib.parse.urlencode({"csrf_token": token, "password": password}))
        for path in ("/users", "/static/console.css", "/server", "/users"):
            get(path)
        conn.close()
    except Exception as error:
        codes.append(f"{type(error).__name__}: {error}")
    results.append(codes)

threads = [threading.Thread(target=browse) for _ in range(count)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(results))
"""

MEMORY = r"""
status = dict(line.split(":", 1) for line in open("/proc/1/status"))
print({k: int(status[k].split()[0]) for k in ("VmRSS", "VmHWM")}["VmRSS"])
"""


def rss_kib(container: Any) -> int:
    return int(eng.run_checked(container, ["python3", "-c", MEMORY]).strip())


def test_fifty_browsers_at_once_are_all_served_within_bounded_memory(lab: Lab) -> None:
    plain = lab.start_server(
        {"VPN_HOST": HOST, "VPN_USER": "alice"},
        name=lab.name("web-off"),
        volume=lab.name("web-off-data"),
        secret_files={"VPN_PASSWORD_FILE": b"Alice-pw-load-1"},
    )
    time.sleep(5)
    without_console = rss_kib(plain.container)
    plain.remove()
    server = lab.start_server(
        {"VPN_HOST": HOST, "VPN_USER": "alice", "VPN_WEB_PORT": str(PORT)},
        name=lab.name("web-load"),
        volume=lab.name("web-load-data"),
        secret_files={
            "VPN_PASSWORD_FILE": b"Alice-pw-load-1",
            "VPN_WEB_PASSWORD_FILE": ADMIN_PASSWORD.encode(),
        },
    )
    browsers = lab.start_clients(server, CONTAINERS)
    address = server.networks()[lab.topology.wan]  # what the client containers reach
    time.sleep(5)  # settled: the first page views and the "last seen" poll are done
    idle = rss_kib(server.container)
    per_container = BROWSERS // CONTAINERS
    samples: list[int] = []
    with ThreadPoolExecutor(CONTAINERS) as pool:
        runs = [
            pool.submit(
                eng.run_checked,
                client.container,
                ["python3", "-c", BROWSE, address, str(PORT), ADMIN_PASSWORD, str(per_container)],
            )
            for client in browsers
        ]
        while not all(run.done() for run in runs):
            samples.append(rss_kib(server.container))
            time.sleep(0.5)
        results = [codes for run in runs for codes in json.loads(run.result())]
    after = rss_kib(server.container)
    during = max(samples, default=after)
    print(
        f"server process (VmRSS): without the console {without_console // 1024} MiB; with it "
        f"idle {idle // 1024} MiB, "
        f"{BROWSERS} browsers at once {during // 1024} MiB (largest of {len(samples)} "
        f"samples), after {after // 1024} MiB"
    )
    assert len(results) == BROWSERS
    assert all(codes == [200, 302, 200, 200, 200, 200] for codes in results), results
    assert during - idle < GROWTH_MIB * 1024
    assert idle - without_console < IDLE_COST_MIB * 1024
    for client in browsers:
        client.remove()
    server.remove()
