"""A headless Chromium driven over the Chrome DevTools Protocol, for the report tests that need
real input: mouse events go through ``Input.dispatchMouseEvent`` (trusted events, hit-tested by
the browser like a user's), page state is read back with ``Runtime.evaluate``, and downloads land
in a folder (``Browser.setDownloadBehavior``). The protocol runs over a local websocket
(``--remote-debugging-port=0``; the ``websockets`` package, which Prefect depends on)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
)


class Browser:
    """One Chromium with one page open at ``url``; close it with ``close()`` (or use ``with``)."""

    def __init__(self, binary: str, profile: Path, url: str, width: int = 1400, height: int = 1000, timeout: float = 60.0):
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", f"--window-size={width},{height}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.log: list[str] = []
        found = threading.Event()
        endpoint: dict[str, str] = {}

        def read() -> None:
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"DevTools listening on (ws://\S+)", line)
                if m and not found.is_set():
                    endpoint["browser"] = m.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(timeout):
            self.close()
            raise RuntimeError("Chromium did not open its DevTools endpoint: " + "".join(self.log)[-800:])
        port = re.search(r"ws://[^:/]+:(\d+)/", endpoint["browser"]).group(1)
        deadline = time.monotonic() + timeout
        page = None
        while page is None and time.monotonic() < deadline:
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5))
            page = next((t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None)
            time.sleep(0.05 if page is None else 0)
        self.browser_ws = connect(endpoint["browser"], max_size=None, open_timeout=timeout)
        self.page_ws = connect(page, max_size=None, open_timeout=timeout)
        self._id = 0

    def _call(self, ws, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        self._id += 1
        ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        while True:
            msg = json.loads(ws.recv(timeout=timeout))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def call(self, method: str, params: dict | None = None) -> dict:
        """A command to the page."""
        return self._call(self.page_ws, method, params)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values)."""
        out = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in out:
            raise RuntimeError(f"{expression!r}: {out['exceptionDetails']}")
        return out["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """The expression's value once it is truthy (errors while the page loads count as not yet)."""
        deadline, error = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError as exc:
                value, error = None, exc
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"{expression} (last error: {error})")

    def mouse(self, kind: str, x: float, y: float, button: str = "none", modifiers: int = 0) -> None:
        """A mouse event at viewport (CSS pixel) coordinates: kind is mouseMoved, mousePressed or mouseReleased."""
        params = {"type": kind, "x": x, "y": y, "button": button, "modifiers": modifiers,
                  "buttons": 1 if button == "left" and kind != "mouseReleased" else 0}
        if kind in ("mousePressed", "mouseReleased"):
            params["clickCount"] = 1
        self.call("Input.dispatchMouseEvent", params)

    def click(self, x: float, y: float) -> None:
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y, "left")
        self.mouse("mouseReleased", x, y, "left")

    def drag(self, path: list[tuple[float, float]], modifiers: int = 0) -> None:
        """Press at the first point, move through the rest with the button held, release at the last."""
        self.mouse("mouseMoved", *path[0])
        self.mouse("mousePressed", *path[0], "left", modifiers)
        for x, y in path[1:]:
            self.mouse("mouseMoved", x, y, "left", modifiers)
        self.mouse("mouseReleased", *path[-1], "left", modifiers)

    def allow_downloads(self, folder: Path) -> None:
        self._call(self.browser_ws, "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)})

    def close(self) -> None:
        for ws in (getattr(self, "page_ws", None), getattr(self, "browser_ws", None)):
            if ws is not None:
                ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
