#!/usr/bin/env python
"""Open bids_qc reports in headless Chromium: no console errors, screenshots, real clicks.

Usage::

    python scripts/check_reports_chromium.py [--out DIR] [--data ../shared/data]

Renders a small demo dataset (``scripts/report_demo.py``: records decided at the shipped
model's calibrated per-detector thresholds; an IXI scan when the shared data is there, the
bundled MNI template otherwise; one scan in error; one file name carrying ``<script>``; two
slabs with a slab-motion verdict and no tier; a second group report from a fine-tuned table),
loads every page in Chromium through the DevTools protocol (``--remote-debugging-pipe``: no
network port, no extra Python package), fails on any console error or uncaught exception,
checks that the injected script did not run, that the participant report draws each
detector's own threshold line where its threshold is, that the group reports show the tiers
the app decided (the fine-tuned ones when the table has them, naming the model) and the
slab-motion flags, rates scans by clicking the widgets, downloads the annotations TSV through
the page's own button and checks its content, and writes full-page screenshots (``*.png``) to
``--out``. Exit code 0 when every check passes, 1 otherwise, 77 when Chromium is missing.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_demo import EVIL, ROOT, build_demo, demo_assessment  # noqa: E402
from report_verdict_checks import check_group_verdicts, check_threshold_lines  # noqa: E402

__all__ = ["EVIL", "ROOT", "Browser", "Page", "build_demo", "demo_assessment", "find_chromium",
           "run_checks"]
logger = logging.getLogger("check_reports_chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe"]


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary ($CHROMIUM wins), or None."""
    env = os.environ.get("CHROMIUM")
    if env and Path(env).exists():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


# --------------------------------------------------------------------------- DevTools over a pipe
class Browser:
    """Minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (fds 3 and 4)."""

    def __init__(self, binary: str, profile: Path, timeout: float = 30.0):
        self.timeout = timeout
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # move the child's ends out of the way of fds 3/4 before dup2 in the child
        high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 20)
        high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 20)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def child_fds():
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=child_fds, close_fds=False)  # only fds 3 and 4 are inheritable
        os.close(high_r)
        os.close(high_w)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self._events: queue.Queue = queue.Queue()
        self._lock = threading.Condition()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self._stderr: list[bytes] = []
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True).start()

    def _read_loop(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._lock:
                        self._replies[msg["id"]] = msg
                        self._lock.notify_all()
                else:
                    self._events.put(msg)
        with self._lock:
            self._lock.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        mid = self._next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        with self._lock:
            while mid not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"no reply to {method} (chromium: "
                                       f"{b''.join(self._stderr)[-500:].decode(errors='replace')})")
                self._lock.wait(min(left, 0.5))
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def events(self, timeout: float = 0.0):
        """Drain pending events (waiting up to ``timeout`` s for the first)."""
        out = []
        try:
            out.append(self._events.get(timeout=timeout) if timeout else self._events.get_nowait())
            while True:
                out.append(self._events.get_nowait())
        except queue.Empty:
            pass
        return out

    def close(self):
        try:
            self.send("Browser.close")
        except Exception:  # already gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass


@dataclass
class Page:
    """One tab: navigate, evaluate JavaScript, collect console errors, take screenshots."""

    browser: Browser
    session: str
    problems: list = field(default_factory=list)
    downloads: dict = field(default_factory=dict)

    @classmethod
    def open(cls, browser: Browser, width: int = 1280, height: int = 900) -> Page:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = cls(browser, session)
        for domain in ("Page", "Runtime", "Log"):
            page.send(f"{domain}.enable")
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return page

    def send(self, method, params=None):
        return self.browser.send(method, params, self.session)

    def _collect(self, timeout=0.0):
        loaded = False
        for ev in self.browser.events(timeout):
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Page.loadEventFired":
                loaded = True
            elif method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails", {})
                self.problems.append("exception: " + (d.get("exception", {}).get("description")
                                                      or d.get("text", "?")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                self.problems.append("console.error: " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                self.problems.append(f"log error: {entry.get('text')} {entry.get('url', '')}")
            elif method == "Browser.downloadProgress":
                self.downloads[params.get("guid")] = params.get("state")
        return loaded

    def goto(self, url: str, timeout: float = 30.0):
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        while not self._collect(0.2):
            if time.monotonic() > deadline:
                raise RuntimeError(f"page did not load: {url}")
        time.sleep(0.3)
        self._collect()

    def js(self, expression: str):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True})
        self._collect()
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS failed: {expression[:80]}: {res['exceptionDetails'].get('text')}")
        return res.get("result", {}).get("value")

    def screenshot(self, path: Path, max_height: int = 7000) -> Path:
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        height = int(min(max_height, max(600, size["height"])))
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False})
        time.sleep(0.2)
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        import base64

        path.write_bytes(base64.b64decode(data["data"]))
        return path


# --------------------------------------------------------------------------- checks
CLICK = """(function (sel) { var el = document.querySelector(sel); if (!el) throw new Error('no ' + sel);
  el.click(); return true; })(%s)"""
SELECT = """(function (row, field, value) {
  var el = document.querySelectorAll('#queue tr.rating')[row].querySelector('[data-field=' + field + ']');
  if (el.tagName === 'SELECT') { el.value = value; } else { el.value = value; }
  el.dispatchEvent(new Event('change', {bubbles: true})); return true; })(%d, %s, %s)"""
IMAGES_OK = "Array.from(document.images).every(function (i) { return i.complete && i.naturalWidth > 0; })"


def _click_download(page: Page, selector: str, folder: Path, name: str, timeout: float = 10.0) -> str:
    """Click ``selector`` and return the text of the download ``name`` it starts, once that
    download (not an earlier one) has completed: an earlier download's "completed" must not let a
    file that Chromium is still writing be read (it was, once: an empty annotations.tsv)."""
    seen = set(page.downloads)
    page.js(CLICK % json.dumps(selector))
    deadline = time.monotonic() + timeout
    target = folder / name
    while time.monotonic() < deadline:
        page._collect(0.2)
        done = any(state == "completed" for guid, state in page.downloads.items() if guid not in seen)
        if done and target.is_file():
            return target.read_text(encoding="utf-8")
    raise RuntimeError(f"download {name} did not complete in {folder}")


def run_checks(binary: str, out: Path, data: Path | None = None, real_saliency: bool = False) -> dict:
    """Render the demo, drive Chromium through it; returns {"problems": [...], "screenshots": [...]}."""
    demo = build_demo(out / "derivatives", data, real_saliency)
    shots, problems = [], []
    downloads = out / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bids_qc_chromium_") as profile:
        browser = Browser(binary, Path(profile))
        try:
            browser.send("Browser.setDownloadBehavior",
                         {"behavior": "allow", "downloadPath": str(downloads), "eventsEnabled": True})
            page = Page.open(browser)
            # 1. participant report: images, saliency, rating round trip through the download
            page.goto(demo["participant"].as_uri())
            if not page.js(IMAGES_OK):
                problems.append("participant: an embedded image did not load")
            if page.js("document.querySelectorAll('#saliency img.overlay').length") < 1:
                problems.append("participant: no saliency overlay")
            problems += check_threshold_lines(page, demo["thresholds"])
            shots.append(page.screenshot(out / "participant.png"))
            for sel in ('input[name=rate-motion][value="2"]', 'input[name=rate-noise][value="0"]',
                        'input[name=rate-tier][value="3"]', 'input[name=sal-det][value=""]'):
                page.js(CLICK % json.dumps(sel))
            page.js("""(function () { var t = document.getElementById('rate-comment');
                t.value = 'ghosting\\tin frontal\\nlobe'; t.dispatchEvent(new Event('input', {bubbles: true})); })()""")
            if not page.js("Array.from(document.querySelectorAll('#saliency img.overlay')).every(i => i.hidden)"):
                problems.append("participant: saliency 'off' did not hide the overlays")
            text = _click_download(page, "#export-tsv", downloads, f"{demo['names'][0]}_annotations.tsv")
            expected = ("bids_name\tparticipant_id\tsession\trun\tmotion\tnoise\tcontrast\ttier_override\tcomment\n"
                        "sub-01_ses-1_run-1_T1w\tsub-01\t1\t1\t2\t0\tn/a\t3\tghosting in frontal lobe\n")
            if text != expected:
                problems.append(f"participant: downloaded TSV differs: {text!r}")
            problems += [f"participant: {p}" for p in page.problems]
            # 2. error report and the injected file name
            for key in ("error", "evil", "slab"):
                page.problems.clear()
                page.goto(demo[key].as_uri())
                if page.js("window.__pwned") is not None:
                    problems.append(f"{key}: injected script ran")
                if key == "evil" and "<script>" not in page.js("document.querySelector('h1').textContent"):
                    problems.append("evil: the file name is not shown as text")
                if key == "error" and "file is empty" not in page.js("document.getElementById('error').textContent"):
                    problems.append("error: the reason is not shown")
                if key == "evil":  # "Start from model grades" copies the model's grades
                    page.js(CLICK % json.dumps("#use-model"))
                    got = page.js("BidsQcAnnotations.read(document.getElementById('rating-box'))")
                    want = page.js("(function (b) { return [b.dataset.modelMotion, b.dataset.modelNoise, "
                                   "b.dataset.modelContrast]; })(document.getElementById('rating-box'))")
                    if [got["motion"], got["noise"], got["contrast"]] != want:
                        problems.append(f"evil: 'Start from model grades' gave {got}, model {want}")
                    page.js(CLICK % json.dumps("#clear-rating"))
                shots.append(page.screenshot(out / f"participant_{key}.png"))
                problems += [f"{key}: {p}" for p in page.problems]
            # 3. group report: sort, filter, queue, export
            page.problems.clear()
            page.goto(demo["group"].as_uri())
            if not page.js(IMAGES_OK):
                problems.append("group: an embedded image did not load")
            if page.js("window.__pwned") is not None:
                problems.append("group: injected script ran")
            shots.append(page.screenshot(out / "group.png"))
            problems += check_group_verdicts(page, demo["table"], "group")
            page.js("""(function () { var ths = document.querySelectorAll('#scans th');
                Array.from(ths).find(t => t.textContent.trim() === 'tier').click(); })()""")
            tiers = page.js("Array.from(document.querySelectorAll('#scans tbody tr')).map(r => r.dataset.tier)")
            nums = [int(t) for t in tiers if t]
            if nums != sorted(nums) or tiers[-1] != "":
                problems.append(f"group: sorting by tier gave {tiers}")
            page.js("""(function () { var s = document.getElementById('f-status'); s.value = 'error';
                s.dispatchEvent(new Event('change')); })()""")
            visible = page.js("Array.from(document.querySelectorAll('#scans tbody tr')).filter(r => !r.hidden).length")
            if visible != 1:
                problems.append(f"group: status filter 'error' shows {visible} rows, expected 1")
            queue_names = page.js("Array.from(document.querySelectorAll('#queue tr.rating')).map(r => r.dataset.bidsName)")
            restored = page.js("BidsQcAnnotations.read(document.querySelector(\"#queue tr.rating[data-bids-name='sub-01_ses-1_run-1_T1w']\")).motion")
            page.js(SELECT % (1, json.dumps("noise"), json.dumps("1")))
            page.js(SELECT % (1, json.dumps("comment"), json.dumps("rated in queue")))
            page.js("""(function () { window.confirm = function () { return true; }; })()""")
            text = group_tsv = _click_download(page, "#q-export", downloads, "annotations.tsv")
            lines = text.splitlines()
            if lines[0].split("\t") != ["bids_name", "participant_id", "session", "run", "motion", "noise",
                                        "contrast", "tier_override", "comment"]:
                problems.append(f"group: bad TSV header {lines[0]!r}")
            rated = {ln.split("\t")[0]: ln.split("\t") for ln in lines[1:]}
            if queue_names[1] not in rated or rated[queue_names[1]][5] != "1":
                problems.append(f"group: queue row 2 not exported as rated: {text!r}")
            problems += [f"group: {p}" for p in page.problems]
            # 4. group report of a fine-tuned table: the fine-tuned tiers, the model named
            page.problems.clear()
            page.goto(demo["group_finetuned"].as_uri())
            shots.append(page.screenshot(out / "group_finetuned.png"))
            problems += check_group_verdicts(page, demo["table_finetuned"], "group (fine-tuned)")
            problems += [f"group (fine-tuned): {p}" for p in page.problems]
        finally:
            browser.close()
    return {"problems": problems, "screenshots": shots, "queue": queue_names,
            "storage_shared": restored == "2", "demo": demo, "group_tsv": group_tsv,
            "downloads": downloads}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for reports and screenshots")
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("BIDS_QC_DATA", ROOT / ".." / "shared" / "data")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    binary = find_chromium()
    if binary is None:
        logger.warning("SKIP: no Chromium found (apt-get install -y chromium)")
        return 77
    out = args.out or Path(tempfile.mkdtemp(prefix="bids_qc_reports_"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = run_checks(binary, out, args.data if args.data.is_dir() else None, real_saliency=True)
    for shot in result["screenshots"]:
        logger.info("screenshot %s (%d kB)", shot, shot.stat().st_size // 1024)
    logger.info("rating in a participant page restored in the group queue: %s", result["storage_shared"])
    for p in result["problems"]:
        logger.error("FAIL %s", p)
    logger.info("%s in %.1f s", "OK" if not result["problems"] else f"{len(result['problems'])} problem(s)",
                time.perf_counter() - t0)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
