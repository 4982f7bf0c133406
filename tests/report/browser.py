"""Open a local HTML file in headless Chromium with the network cut off, and say what the
page did: its console errors, the loads that failed, and a screenshot of the whole page.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages ending with a NUL byte, read by Chromium on its fd 3 and written on its
fd 4), not by reading its stderr.  With ``--enable-logging=stderr``, Chromium 156 logs
the page's console messages all at level INFO (an error looks like any log line), logs
no line at all for a stylesheet, script or image that failed to load, and mixes in its
own noise.  Over the protocol every console message (with its level), exception and failed
request of the page arrives as an event of its own, and the page's ``load`` event says
when the page and all its images are in, whatever the machine's speed.

Every browser runs in its own process group, with its profile, home and crash database
in a new temporary directory: when `open_offline` returns or raises, the group and the
crash handlers (which leave the group, but name the directory) are killed, and the
directory is removed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

CHROMIUM = "chromium"
PROFILE_PREFIX = "milonga-chromium-"
"""Prefix of the temporary directory each browser runs in (its profile, home and
TMPDIR), so that one left behind can be told."""
TIMEOUT_SECONDS = 120.0
"""A safety net only: every wait ends on a protocol message or on Chromium exiting."""
WINDOW = (1280, 1024)
"""Width and height of the window, in CSS pixels; the screenshot is as tall as the page."""

OFFLINE_FLAGS = (
    # Every host name fails to resolve, and every request goes to a proxy on the discard
    # port, where nothing listens: a page that loads anything from elsewhere gets a
    # failed request (and a console error), never a silent success.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
)
QUIET_FLAGS = (
    "--headless",
    # Tests run as root in CI containers, and Chromium refuses to start its sandbox as
    # root (the setuid/user-namespace sandbox needs an unprivileged user); the page is a
    # local file we wrote, with no network, so running it unsandboxed risks nothing.
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
)


class BrowserError(RuntimeError):
    """Chromium did not start, stopped, or did not answer in time."""


@dataclass
class PageCheck:
    """What happened while a page was opened."""

    console_errors: list[str] = field(default_factory=list)
    """Console messages of level error or warning, and uncaught exceptions."""
    failed_loads: list[str] = field(default_factory=list)
    """``URL: reason`` of every request that failed or got an HTTP error status."""
    requested: list[str] = field(default_factory=list)
    """Every URL the page requested, the page itself first."""
    screenshot: bytes = b""
    """PNG of the whole page, as tall as its content."""
    content_width: float = 0.0
    """How wide the page's content is, in CSS pixels: wider than the window, it scrolls
    sideways."""
    browser_pid: int = 0
    """Chromium's process id, which is also its process group's."""
    profile: Path | None = None
    """The temporary directory it ran in: profile, home and TMPDIR (removed by then)."""


def chromium_path() -> str | None:
    """Chromium's executable on the PATH, or None where it is not installed."""
    return shutil.which(CHROMIUM)


class _Pipe:
    """The DevTools protocol over Chromium's pipe: numbered commands and their events."""

    def __init__(self, to_browser: int, from_browser: int, process: subprocess.Popen[bytes]):
        self._out = to_browser
        self._in = from_browser
        self._process = process
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send a command and return its result; the events that come before the result
        are kept in `events`.  Raises BrowserError on a protocol error."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        answer = self._until(lambda m: m.get("id") == self._next_id, f"the answer to {method}")
        if "error" in answer:
            raise BrowserError(f"Chromium refused {method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        """Wait for event ``method`` of ``session`` (or return it if it already came)."""

        def wanted(message: dict[str, Any]) -> bool:
            return message.get("method") == method and message.get("sessionId") == session

        for event in self.events:
            if wanted(event):
                return event
        return self._until(wanted, f"the event {method}")

    def _until(self, wanted: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Read messages until one is ``wanted`` and return it, keeping every event on the
        way; raises BrowserError if Chromium stops, or sends none within the safety net."""
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" not in message:
                    self.events.append(message)
                if wanted(message):
                    return dict(message)
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Chromium did not send {what} within {TIMEOUT_SECONDS} s")
            ready, _, _ = select.select([self._in], [], [], left)
            chunk = os.read(self._in, 1 << 20) if ready else b""
            if ready and not chunk:
                raise BrowserError(
                    f"Chromium closed its DevTools pipe before {what} "
                    f"(exit status {self._process.poll()})"
                )
            self._buffer += chunk


@contextmanager
def browser(window: tuple[int, int], check: PageCheck) -> Iterator[_Pipe]:
    """Start Chromium with a fresh profile and yield its DevTools pipe; ``check`` gets its
    process id and temporary directory.  On leaving, however the block ends, whatever is
    left of the browser is killed and the directory removed."""
    executable = chromium_path()
    if executable is None:
        raise BrowserError("chromium is not installed; install it with apt-get install chromium")
    root = Path(tempfile.mkdtemp(prefix=PROFILE_PREFIX))
    check.profile = root
    commands_r, commands_w = os.pipe()
    answers_r, answers_w = os.pipe()
    process: subprocess.Popen[bytes] | None = None
    try:
        process = _start(executable, root, window, (commands_r, answers_w))
        check.browser_pid = process.pid
        yield _Pipe(commands_w, answers_r, process)
        # Closed through the protocol: let it reap its own helpers before they are killed.
        process.wait(TIMEOUT_SECONDS)
    finally:
        for fd in (commands_r, answers_w, commands_w, answers_r):
            os.close(fd)
        if process is not None:
            _stop(process, root)
        shutil.rmtree(root, ignore_errors=True)


def _start(
    executable: str, root: Path, window: tuple[int, int], child_ends: tuple[int, int]
) -> subprocess.Popen[bytes]:
    """Start Chromium in a new process group, reading commands from the first of
    ``child_ends`` (its fd 3) and writing answers to the second (its fd 4), with its
    profile, home and crash database all under ``root``.

    HOME and the XDG directories point into ``root`` because Chromium's crash handler
    (crashpad) writes its database under ``~/.config/chromium`` whatever the profile,
    and runs as a process of its own outside the group: that way both are found again
    by the path.  TMPDIR too, where Chromium makes the directory of its singleton
    socket, which a killed browser leaves behind.
    """
    # Copies numbered 10 and up, closed at exec, out of the way of fds 3 and 4.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in child_ends]

    def pipes_at_3_and_4() -> None:  # runs in the child, between fork and exec
        os.dup2(high[0], 3)  # dup2 makes them inheritable
        os.dup2(high[1], 4)

    (root / "tmp").mkdir()
    environment = os.environ | {
        "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "home" / ".config"),
        "XDG_CACHE_HOME": str(root / "home" / ".cache"),
        "TMPDIR": str(root / "tmp"),
    }
    try:
        return subprocess.Popen(
            [
                executable,
                *QUIET_FLAGS,
                *OFFLINE_FLAGS,
                "--remote-debugging-pipe",
                f"--user-data-dir={root / 'profile'}",
                f"--window-size={window[0]},{window[1]}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=environment,
            # Not pass_fds=(3, 4): that fails unless this process has fds 3 and 4 open.
            # Without close_fds, Chromium gets this process's inheritable fds only, and
            # Python makes every fd it opens non-inheritable (PEP 446).
            close_fds=False,
            preexec_fn=pipes_at_3_and_4,  # noqa: PLW1509  # only two dup2 calls
            start_new_session=True,
        )
    finally:
        for fd in high:
            os.close(fd)


def leftovers(root: Path, group: int) -> list[psutil.Process]:
    """The live processes of Chromium's process ``group``, or whose command line names
    its temporary directory ``root`` (its crash handlers, which leave the group)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            command = " ".join(process.info["cmdline"] or ())
            if str(root) in command or os.getpgid(process.pid) == group:
                found.append(process)
        except (psutil.Error, ProcessLookupError):
            continue  # it ended meanwhile
    return found


def _stop(process: subprocess.Popen[bytes], root: Path) -> None:
    """Kill everything left of the browser ``process`` started in ``root``, and reap it."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    rest = leftovers(root, process.pid)
    for other in rest:
        with suppress(psutil.Error):
            other.kill()
    psutil.wait_procs(rest, timeout=TIMEOUT_SECONDS)


def open_offline(page: Path, window: tuple[int, int] = WINDOW) -> PageCheck:
    """Open ``page`` (a local HTML file) in headless Chromium without network access,
    wait for its ``load`` event, and return what it logged, what failed to load and a
    full-page screenshot.  Raises BrowserError if Chromium is absent or misbehaves."""
    check = PageCheck()
    with browser(window, check) as pipe:
        target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
        session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.call(f"{domain}.enable", session)
        navigation = pipe.call("Page.navigate", session, url=page.resolve().as_uri())
        if "errorText" in navigation:
            raise BrowserError(f"Chromium could not open {page}: {navigation['errorText']}")
        pipe.wait_event("Page.loadEventFired", session)
        size = pipe.call("Page.getLayoutMetrics", session)["cssContentSize"]
        check.content_width = size["width"]
        shot = pipe.call(
            "Page.captureScreenshot",
            session,
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        check.screenshot = base64.b64decode(shot["data"])
        urls: dict[str, str] = {}
        for event in pipe.events:
            if event.get("sessionId") == session:
                _note(check, urls, event["method"], event.get("params", {}))
        pipe.call("Browser.close")
    return check


def _note(check: PageCheck, urls: dict[str, str], method: str, params: dict[str, Any]) -> None:
    """Record in ``check`` what the page event ``method`` with ``params`` tells; ``urls``
    keeps the URL of each request id seen so far."""
    if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
        texts = [str(arg.get("value", arg.get("description", ""))) for arg in params["args"]]
        check.console_errors.append(f"console.{params['type']}: {' '.join(texts)}")
    elif method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        check.console_errors.append(
            f"exception: {details.get('exception', {}).get('description', details['text'])}"
        )
    elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
        entry = params["entry"]
        check.console_errors.append(f"{entry['source']} {entry['level']}: {entry['text']}")
    elif method == "Network.requestWillBeSent":
        urls[params["requestId"]] = params["request"]["url"]
        check.requested.append(params["request"]["url"])
    elif method == "Network.loadingFailed":
        url = urls.get(params["requestId"], "a request")
        check.failed_loads.append(f"{url}: {params['errorText']}")
    elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
        response = params["response"]
        check.failed_loads.append(f"{response['url']}: HTTP {response['status']}")
