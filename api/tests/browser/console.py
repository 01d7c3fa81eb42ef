"""The operators' console in real headless Chromium (Debian's package), driven by
Playwright for Python: an admin signs in with the second factor, sees a job appear
and finish live (no reload), pauses a queue and sees a submission wait, sees dead
emails on the overview within a second, retries one from its page and the other with
"Retry dead" (an operation followed live), opens the request, the upload, the
schedules, a suppression and the audit log, moves by keyboard, reads it at phone
width; a user is refused; axe-core finds no serious or critical violation on any
page; the pages run under their CSP with nothing refused. Screenshots go to OUT_DIR.

Usage: console.py BASE_URL CHROMIUM AXE_JS OUT_DIR ADMIN_EMAIL USER_EMAIL PASSWORD
                  WORKER_METRICS_URL
Prints one JSON report line; exits 1 on the first failed check.
"""

import base64
import hashlib
import hmac
import json
import struct
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import sync_playwright

BASE, CHROMIUM, AXE, OUT, ADMIN, USER, PASSWORD, WORKER_METRICS = sys.argv[1:9]
WAIT_MS = 10_000
report = {"pages": {}, "screenshots": []}


def fail(message):
    print(json.dumps(report), flush=True)
    sys.exit(f"console browser test: {message}")


def check(condition, message):
    if not condition:
        fail(message)


def totp(secret, at):
    """RFC 6238, as Conveyor checks it: HMAC-SHA1, 6 digits, 30 s steps."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(at // 30)), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{code:06d}"


def call(method, path, body=None, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(BASE + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def enrol_admin():
    """TOTP enrolment through the API; returns (secret, a recovery code, the step used)."""
    status, body = call("POST", "/api/v1/auth/login", {"email": ADMIN, "password": PASSWORD})
    check(status == 200, f"admin login answered {status}: {body}")
    token = body["access_token"]
    status, setup = call("POST", "/api/v1/auth/2fa/setup", token=token)
    check(status == 200, f"2fa setup answered {status}: {setup}")
    now = time.time()
    status, enabled = call(
        "POST", "/api/v1/auth/2fa/enable", {"code": totp(setup["secret"], now)}, token
    )
    check(status == 200, f"2fa enable answered {status}: {enabled}")
    return setup["secret"], enabled["recovery_codes"][0], now


def admin_api_token(recovery_code):
    """An API session that passed 2FA (a recovery code: the TOTP steps are spent)."""
    status, body = call("POST", "/api/v1/auth/login", {"email": ADMIN, "password": PASSWORD})
    check(status == 200 and body.get("mfa_required"), f"login answered {status}: {body}")
    status, body = call(
        "POST", "/api/v1/auth/login/mfa", {"mfa_token": body["mfa_token"], "code": recovery_code}
    )
    check(status == 200, f"login with a recovery code answered {status}: {body}")
    return body["access_token"]


def worker_sees_paused(queue, paused):
    """Waits until the worker's /metrics says the queue is (not) paused: it takes the
    switch from Redis within a second."""
    line = f'conveyor_queue_paused{{queue="{queue}"}} {1 if paused else 0}'
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        with urllib.request.urlopen(WORKER_METRICS) as response:
            if line in response.read().decode().splitlines():
                return
        time.sleep(0.1)
    fail(f"the worker never showed {line}")


def axe(page, name):
    """axe-core on the page as it is now; fails on a serious or critical violation."""
    violations = page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}));
        }"""
    )
    report["pages"][name] = violations
    grave = [v for v in violations if v["impact"] in ("serious", "critical")]
    check(not grave, f"axe-core on {name}: {grave}")


def shot(page, name):
    path = f"{OUT}/{name}.png"
    page.screenshot(path=path, full_page=True)
    report["screenshots"].append(path)


def upload_file(token, name, content):
    """Uploads a file through the API (multipart); returns its id."""
    boundary = "conveyor-console-test"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: text/plain\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        BASE + "/api/v1/uploads",
        data=body,
        method="POST",
        headers={
            "authorization": f"Bearer {token}",
            "content-type": f"multipart/form-data; boundary={boundary}",
        },
    )
    try:
        with urllib.request.urlopen(request) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        fail(f"upload answered {error.code}: {error.read()!r}")
    check("id" in answer, f"the upload's answer names no upload: {answer}")
    return answer["id"]


def cell(page, queue, column):
    """The text of a queue's cell (columns counted from 1 after the name)."""
    return page.locator(f'tr[data-queue="{queue}"] td').nth(column - 1).inner_text()


def main():
    secret, recovery, enrolled_at = enrol_admin()
    token = admin_api_token(recovery)
    refused_by_csp = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        # axe-core comes in as an init script (the page's CSP does not apply to it).
        context.add_init_script(path=AXE)
        page = context.new_page()
        page.on(
            "console",
            lambda m: refused_by_csp.append(m.text)
            if "Content Security Policy" in m.text
            else None,
        )

        # Signed out, the console sends you to sign in.
        page.goto(f"{BASE}/console")
        check(page.url == f"{BASE}/console/login", f"not sent to sign in: {page.url}")
        focused = page.evaluate("document.activeElement.id")
        check(focused == "email", f"the login page starts in {focused!r}, not the email field")
        axe(page, "login")
        shot(page, "login")

        # The password, then the code (the step after the enrolment's: no replay).
        page.fill("#email", ADMIN)
        page.fill("#password", PASSWORD)
        page.get_by_role("button", name="Continue").click()
        page.wait_for_selector("#code")
        axe(page, "code")
        shot(page, "code")
        page.fill("#code", totp(secret, enrolled_at + 30))
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{BASE}/console")
        page.wait_for_selector('tr[data-queue="canary"]')

        # By keyboard: the first Tab reaches the skip link, which moves to the content.
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.textContent.trim()")
        check(focused == "Skip to the content", f"first Tab focused {focused!r}")
        page.keyboard.press("Enter")
        focused = page.evaluate("document.activeElement.id")
        check(focused == "main", f"the skip link moved focus to {focused!r}")

        # A job appears and finishes live: the canary row's successes go up without
        # a reload (the marker set on this document survives).
        page.evaluate("window.__sameDocument = true")
        before = int(cell(page, "canary", 6))
        status, body = call("POST", "/api/v1/admin/canary", {"count": 1}, token)
        check(status == 202, f"canary answered {status}: {body}")
        started = time.monotonic()
        page.wait_for_function(
            f"""() => {{
                const row = document.querySelector('tr[data-queue="canary"]');
                return row && Number(row.querySelectorAll('td')[5].textContent) > {before};
            }}""",
            timeout=WAIT_MS,
        )
        report["canary_seen_after_s"] = round(time.monotonic() - started, 2)
        check(page.evaluate("window.__sameDocument === true"), "the page reloaded")
        axe(page, "overview")
        shot(page, "overview")

        # Paused, the queue keeps a submission waiting (seen live); the focus stays on
        # the Resume button while the table is replaced; resumed by keyboard, it runs.
        page.click("#pause-canary")
        page.wait_for_selector("#resume-canary")
        worker_sees_paused("canary", True)
        status, body = call("POST", "/api/v1/admin/canary", {"count": 1}, token)
        check(status == 202, f"canary answered {status}: {body}")
        page.wait_for_function(
            """() => {
                const row = document.querySelector('tr[data-queue="canary"]');
                return row && Number(row.querySelectorAll('td')[1].textContent) >= 1;
            }""",
            timeout=WAIT_MS,
        )
        page.focus("#resume-canary")
        updated = page.evaluate("document.querySelector('[data-live]').dataset.updatedAt")
        # The oldest queued job's age changes every second: the table is replaced.
        page.wait_for_function(
            f"() => document.querySelector('[data-live]').dataset.updatedAt !== {json.dumps(updated)}",
            timeout=WAIT_MS,
        )
        focused = page.evaluate("document.activeElement.id")
        check(focused == "resume-canary", f"focus moved to {focused!r} when the table changed")
        axe(page, "overview-paused")
        shot(page, "overview-paused")
        page.keyboard.press("Enter")
        page.wait_for_selector("#pause-canary")
        page.wait_for_function(
            f"""() => {{
                const row = document.querySelector('tr[data-queue="canary"]');
                return row && Number(row.querySelectorAll('td')[5].textContent) > {before + 1};
            }}""",
            timeout=WAIT_MS,
        )

        # Two jobs die (the SMTP server answers 451 twice and one attempt is allowed):
        # the overview shows them within a second; one's page retries it, and it is
        # delivered; the other goes back through "Retry dead", an operation whose
        # progress is live.
        for n in (1, 2):
            status, body = call(
                "POST",
                "/api/v1/emails",
                {"to": [f"reader{n}@example.org"], "subject": "Console", "text": "Hello"},
                token,
            )
            check(status == 202, f"email answered {status}: {body}")
            request_id = body["id"]
        submitted = time.monotonic()
        page.wait_for_function(
            """() => {
                const row = document.querySelector('tr[data-queue="emails"]');
                return row && Number(row.querySelectorAll('td')[4].textContent) >= 2;
            }""",
            timeout=WAIT_MS,
        )
        report["dead_job_seen_after_s"] = round(time.monotonic() - submitted, 2)
        page.click('tr[data-queue="emails"] td.dead a')
        page.wait_for_selector("tr[data-job]")
        axe(page, "jobs")
        shot(page, "jobs")
        page.locator("tr[data-job] a.id").first.click()
        page.wait_for_selector("#retry")
        job_url = page.url
        check(page.inner_text("#job-status") == "dead", "the job is not shown dead")
        check("451" in page.inner_text(".facts"), "the job's page does not show the 451")
        attempts = page.locator("table.attempts tbody tr").count()
        check(attempts == 1, f"the dead job shows {attempts} attempts, not 1")
        check("failed, dead" in page.inner_text("table.attempts"), "its attempt is not shown failed")
        axe(page, "job-dead")
        shot(page, "job-dead")
        page.click("#retry")
        page.wait_for_function(
            "() => document.querySelector('#job-status')?.textContent === 'succeeded'",
            timeout=WAIT_MS,
        )
        axe(page, "job-succeeded")
        shot(page, "job-succeeded")

        # The alert for the dead jobs holds; "Retry dead" sends the other one back as
        # an operation, whose page follows it to the end.
        page.goto(f"{BASE}/console")
        page.wait_for_selector('[data-alert="DeadJobs"]')
        page.wait_for_selector("#retry-dead-emails")
        axe(page, "overview-alerts")
        shot(page, "overview-alerts")
        page.click("#retry-dead-emails")
        page.wait_for_url(f"{BASE}/console/operations/*")
        page.wait_for_function(
            "() => document.querySelector('#operation-state')?.textContent === 'done'",
            timeout=WAIT_MS,
        )
        count = page.inner_text("#operation-count")
        check(count == "1 of 1", f"the operation says {count!r}")
        axe(page, "operation")
        shot(page, "operation")

        # The request of the email retried by hand: its jobs and what happened, live.
        page.goto(job_url)
        page.locator('a[href^="/console/requests/"]').first.click()
        page.wait_for_url(f"{BASE}/console/requests/*")
        page.wait_for_selector("[data-live]")
        axe(page, "request")
        shot(page, "request")
        page.goto(f"{BASE}/console/requests")
        page.wait_for_selector(f'a[href="/console/requests/{request_id}"]')
        axe(page, "requests")
        shot(page, "requests")

        # An upload: listed with its verdict, and its page.
        upload = upload_file(token, "notes.txt", b"Plain words, nothing to see.\n")
        page.goto(f"{BASE}/console/uploads")
        page.wait_for_selector(f'a[href="/console/uploads/{upload}"]')
        axe(page, "uploads")
        shot(page, "uploads")
        page.click(f'a[href="/console/uploads/{upload}"]')
        page.wait_for_url(f"{BASE}/console/uploads/{upload}")
        page.wait_for_selector("[data-live]")
        axe(page, "upload")
        shot(page, "upload")

        # Schedules (the worker registered its own), a suppression found by address,
        # and the audit log of everything done above.
        page.goto(f"{BASE}/console/schedules")
        page.wait_for_selector("tr[data-schedule]")
        axe(page, "schedules")
        shot(page, "schedules")
        status, body = call("POST", "/api/v1/suppressions", {"address": "gone@example.org"}, token)
        check(status in (200, 201), f"suppression answered {status}: {body}")
        page.goto(f"{BASE}/console/suppressions")
        page.fill("#address", "gone@example.org")
        page.get_by_role("button", name="Search").click()
        page.wait_for_selector("tr[data-suppression]")
        axe(page, "suppressions")
        shot(page, "suppressions")
        page.goto(f"{BASE}/console/audit")
        for action in ("pause", "resume", "retry", "bulk_retry"):
            check(
                page.locator("th", has_text=action).count() >= 1,
                f"the audit log does not show {action}",
            )
        axe(page, "audit")
        shot(page, "audit")
        page.goto(f"{BASE}/console")

        # Phone width: nothing spills out of the page.
        page.set_viewport_size({"width": 390, "height": 844})
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        check(overflow <= 1, f"the page is {overflow}px wider than a phone")
        axe(page, "overview-phone")
        shot(page, "overview-phone")

        # Signing out leads back to sign in.
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{BASE}/console/login")

        # A user is refused, plainly.
        page.fill("#email", USER)
        page.fill("#password", PASSWORD)
        page.get_by_role("button", name="Continue").click()
        page.wait_for_selector("#login-error")
        text = page.inner_text("#login-error")
        check("two-factor" in text, f"the user's refusal says {text!r}")
        axe(page, "refused")
        shot(page, "refused")
        browser.close()
    check(not refused_by_csp, f"the CSP refused: {refused_by_csp}")
    print(json.dumps(report), flush=True)


main()
