"""A real headless Chromium for the tests (Debian's ``chromium``), driven over the DevTools
protocol on a pipe (``--remote-debugging-pipe``: JSON messages ended by NUL on file
descriptors 3 and 4), so that no WebSocket client and no debugging port are needed.

:func:`open_page` loads a file and reports what a person opening it would not see: console
errors, uncaught exceptions, and every network request (anything but ``file:`` and
``data:`` URLs), then takes a screenshot. Chromium runs with a fresh profile in a temporary
directory, without background networking, and with every host name resolving to nothing
(a page that tries the network fails there and is reported, never reaches out).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageReport:
    """What happened while the page loaded."""

    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # URLs other than file: and data:
    screenshot: bytes = b""
    values: dict[str, Any] = field(default_factory=dict)  # the expressions asked for


class Chromium:
    """One headless Chromium; ``call`` sends a DevTools command and returns its result,
    keeping the events that arrive meanwhile in ``events``."""

    def __init__(self, binary: str, *, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.profile = Path(tempfile.mkdtemp(prefix="mailauth-chromium-"))
        to_child_r, self._to_child = (_high(fd) for fd in os.pipe())
        self._from_child, from_child_w = (_high(fd) for fd in os.pipe())
        arguments = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--window-size=1280,900",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # (bash gives the pipes to Chromium as its fds 3 and 4, then becomes it; dash's
        # redirections stop at fd 9)
        self._process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_child_r} 4>&{from_child_w} '
             f"{to_child_r}<&- {from_child_w}>&-", binary, *arguments],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(to_child_r, from_child_w),
        )  # fmt: skip
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        """The first event ``method`` (already received or still to come)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(self._read(deadline))

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed its DevTools pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))

    def close(self) -> None:
        try:
            self._process.terminate()
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._to_child)
        os.close(self._from_child)
        shutil.rmtree(self.profile, ignore_errors=True)


def _high(fd: int) -> int:
    """``fd`` moved to 10 or above (clear of the 3 and 4 the child's pipes become)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


def open_page(
    path: Path, *, evaluate: tuple[str, ...] = (), max_height: int = 20_000
) -> PageReport:
    """Load ``path`` in headless Chromium, wait for its load event and a moment more, and
    report its console errors, exceptions, network requests, the values of the JavaScript
    ``evaluate`` expressions (in order, after the load), and a PNG screenshot of the page
    (its whole width, at most ``max_height`` pixels of it from the top)."""
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("Chromium is not installed (Debian's chromium)")
    browser = Chromium(binary)
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        browser.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable")
        browser.call("Page.navigate", {"url": path.resolve().as_uri()})
        browser.wait_for("Page.loadEventFired")
        time.sleep(0.5)  # (scripts run at load; late requests or errors show up meanwhile)
        report = PageReport()
        for index, expression in enumerate(evaluate):
            result = browser.call(
                "Runtime.evaluate", {"expression": expression, "returnByValue": True}
            )
            if "exceptionDetails" in result:
                report.exceptions.append(f"evaluate {expression!r}: {result['exceptionDetails']}")
            report.values[str(index)] = result.get("result", {}).get("value")
        metrics = browser.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        height = min(size["height"], max_height)
        clip = {"x": 0, "y": 0, "width": size["width"], "height": height, "scale": 1}
        shot = browser.call(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        report.screenshot = base64.b64decode(shot["data"])
        _collect(browser.events, report)
        return report
    finally:
        browser.close()


def _collect(events: list[dict[str, Any]], report: PageReport) -> None:
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            report.exceptions.append(json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            report.console_errors.append(json.dumps(params.get("args", []))[:500])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            report.console_errors.append(str(params["entry"].get("text", ""))[:500])
        elif method == "Network.requestWillBeSent":
            url = str(params.get("request", {}).get("url", ""))
            if not url.startswith(("file:", "data:")):
                report.requests.append(url)
