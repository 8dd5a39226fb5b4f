"""Screenshots of the Dagster UI as a person sees it: the asset graph and `predictions`' pictures.

Starts `dagster dev` on a loopback port in a throw-away DAGSTER_HOME (or uses `--url`), builds
the local graph through the GraphQL API, then drives headless Chromium over the DevTools
protocol: it opens the pages, clicks "[Show Markdown]" on the pictures (the UI keeps long
markdown behind that button) and fails if a page does not show what it should, so an error page
never ends up in `docs/`.

    .venv/bin/python scripts/screenshots.py --out docs/ui.png            # synthetic demo data
    .venv/bin/python scripts/screenshots.py --url http://127.0.0.1:3000 --out /tmp/ui.png

Needs Debian's `chromium` (or `--chromium PATH`); `--fast` trains a tiny model instead of the
demo-sized default.
"""

import argparse
import base64
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient
from PIL import Image
from websockets.sync.client import ClientConnection, connect

REPO = Path(__file__).resolve().parent.parent
ASSETS = ("raw_oct_images", "reduced_sample", "trained_model", "predictions")
FAST_CONFIG = {
    "ops": {
        "reduced_sample": {"config": {"train_per_class": 6, "test_per_class": 3}},
        "trained_model": {"config": {"epochs": 2, "image_size": 32, "batch_size": 16}},
    }
}
CHROMIUM_FLAGS = [
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]
WIDTH, HEIGHT = 1600, 1000
GREY = "#c8c8c8"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dagster_dev(env: dict[str, str], log: Path) -> Iterator[str]:
    """`dagster dev` on a free loopback port; yields its URL, stops it (and its children)."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("dagster")), "dev", "-w", "workspace.yaml"]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown reaches its children
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_server(url, proc, log)
        yield url
    finally:
        stop_process_group(proc)


def wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Until the webserver answers and the code location has loaded."""
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError, ValueError):
            body = json.dumps({"query": query}).encode()
            request = urllib.request.Request(
                f"{url}/graphql", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                entries = json.load(response)["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return
        time.sleep(1)
    raise TimeoutError(f"dagster dev at {url} not ready after {timeout}s:\n{log.read_text()}")


def stop_process_group(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM (dagster dev then stops its webserver, daemon and code server), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group this script started
    proc.wait()


def materialize_local_graph(url: str, run_config: dict, timeout: float = 1800) -> str:
    """Launch the `local_graph` job through GraphQL and wait for it to succeed; the run id."""
    host, port = url.removeprefix("http://").split(":")
    client = DagsterGraphQLClient(host, port_number=int(port))
    run_id = client.submit_job_execution("local_graph", run_config=run_config)
    deadline = time.monotonic() + timeout
    while (status := client.get_run_status(run_id)) not in (
        DagsterRunStatus.SUCCESS,
        DagsterRunStatus.FAILURE,
        DagsterRunStatus.CANCELED,
    ):
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {status.value} after {timeout}s")
        time.sleep(2)
    if status != DagsterRunStatus.SUCCESS:
        raise RuntimeError(f"run {run_id} ended {status.value}; see {url}/runs/{run_id}")
    return run_id


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page, loopback only)."""

    def __init__(self, chromium: str) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="oct_chromium_"))
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={self.profile}"]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run its sandbox as root
        self.proc = subprocess.Popen(
            [chromium, *flags, "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(self._connect())
        self.next_id = 0
        self.call("Page.enable")
        self.resize(WIDTH, HEIGHT)

    def _connect(self) -> ClientConnection:
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start (is the `chromium` package installed?)")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        return connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # events arrive interleaved with the answer
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def js(self, expression: str):
        result = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            if time.monotonic() > deadline:
                text = (self.js("document.body ? document.body.innerText : ''") or "")[:1500]
                raise TimeoutError(f"the page never showed {what}; it shows:\n{text}")
            time.sleep(0.3)

    def resize(self, width: int, height: int) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def screenshot(
        self, selector: str | None = None, margin: int = 0, scale: float = 1
    ) -> Image.Image:
        """The viewport, or the box around every element matching `selector` at `scale`."""
        params: dict = {"format": "png"}
        if selector:
            box = self.js(
                f"""(() => {{
                const rects = Array.from(document.querySelectorAll({json.dumps(selector)}))
                    .map(e => e.getBoundingClientRect()).filter(r => r.width && r.height);
                if (!rects.length) return null;
                const x = Math.min(...rects.map(r => r.left)) - {margin};
                const y = Math.min(...rects.map(r => r.top)) - {margin};
                return {{x: Math.max(x, 0), y: Math.max(y, 0), scale: {scale},
                    width: Math.max(...rects.map(r => r.right)) + {margin} - Math.max(x, 0),
                    height: Math.max(...rects.map(r => r.bottom)) + {margin} - Math.max(y, 0)}};
                }})()"""
            )
            if not box:
                raise RuntimeError(f"nothing on the page matches {selector!r}")
            params["clip"] = box
        data = self.call("Page.captureScreenshot", **params)["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stack.close()
        stop_process_group(self.proc, timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


def text_shown(*texts: str) -> str:
    checks = " && ".join(f"document.body.innerText.includes({json.dumps(t)})" for t in texts)
    return f"!!document.body && {checks}"


def asset_graph(browser: Browser, url: str) -> tuple[Image.Image, Image.Image]:
    """The `oct` group's lineage, every asset materialised with its checks: the page, and the
    graph's nodes (SVG foreignObjects) cropped at twice the resolution."""
    # The group's own page: the global lineage collapses groups once there are several (`oct`
    # and `serving`).
    browser.open(f"{url}/locations/oct_assets/asset-groups/oct")
    browser.wait_for(text_shown(*ASSETS, "Materialized", "Passed"), "the materialised graph")
    time.sleep(1.5)  # let the graph settle its layout and zoom-to-fit
    return browser.screenshot(), browser.screenshot("foreignObject", margin=24, scale=2)


def metadata_picture(
    browser: Browser, url: str, asset: str, label: str
) -> tuple[Image.Image, Image.Image]:
    """`asset`'s latest materialisation with the picture in metadata entry `label` opened: the
    page, and the dialog showing the picture."""
    browser.open(f"{url}/assets/{asset}?view=events")
    browser.wait_for(text_shown("Materialized in run", label), f"{asset}'s metadata")
    clicked = browser.js(
        f"""(() => {{
        const row = Array.from(document.querySelectorAll('tr')).find(
            r => r.firstElementChild && r.firstElementChild.textContent.trim() === {label!r});
        const button = row && Array.from(row.querySelectorAll('a, button')).find(
            b => b.textContent.trim() === '[Show Markdown]');
        if (button) button.click();
        return !!button; }})()"""
    )
    if not clicked:
        raise RuntimeError(f"{asset} has no picture under metadata entry {label!r}")
    browser.wait_for(
        "Array.from(document.querySelectorAll('[role=dialog] img'))"
        ".some(i => i.complete && i.naturalWidth > 0)",
        f"the {label} picture",
    )
    time.sleep(0.5)
    return browser.screenshot(), browser.screenshot("[role=dialog]", margin=4)


def row(images: list[Image.Image], height: int) -> Image.Image:
    """Images side by side at a common `height`, separated by a thin grey rule."""
    scaled = [i.resize((round(i.width * height / i.height), height), Image.LANCZOS) for i in images]
    sheet = Image.new("RGB", (sum(i.width for i in scaled) + 8 * (len(scaled) - 1), height), GREY)
    left = 0
    for image in scaled:
        sheet.paste(image, (left, 0))
        left += image.width + 8
    return sheet


def column(images: list[Image.Image], width: int) -> Image.Image:
    """Images stacked at a common `width`, separated by a thin grey rule."""
    scaled = [i.resize((width, round(i.height * width / i.width)), Image.LANCZOS) for i in images]
    sheet = Image.new("RGB", (width, sum(i.height for i in scaled) + 8 * (len(scaled) - 1)), GREY)
    top = 0
    for image in scaled:
        sheet.paste(image, (0, top))
        top += image.height + 8
    return sheet


def capture(url: str, out: Path, shots_dir: Path | None, chromium: str) -> None:
    """Write the composite (graph over the confusion matrix and CAM grid) to `out`, and every
    full-page screenshot to `shots_dir` when given."""
    browser = Browser(chromium)
    try:
        shots = {
            "asset_graph": asset_graph(browser, url),
            "predictions_confusion_matrix": metadata_picture(
                browser, url, "predictions", "confusion_matrix"
            ),
            "predictions_cam_grid": metadata_picture(browser, url, "predictions", "cam_grid"),
            "reduced_sample_contact_sheet": metadata_picture(
                browser, url, "reduced_sample", "contact_sheet"
            ),
        }
    finally:
        browser.close()
    if shots_dir:
        shots_dir.mkdir(parents=True, exist_ok=True)
        for name, (page, _) in shots.items():
            page.save(shots_dir / f"{name}.png")
    pictures = row(
        [shots[n][1] for n in ("predictions_confusion_matrix", "predictions_cam_grid")], 700
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    column([shots["asset_graph"][1], pictures], 1200).save(out, optimize=True)
    print(f"wrote {out}" + (f" and {len(shots)} screenshots in {shots_dir}" if shots_dir else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "ui.png")
    parser.add_argument("--shots", type=Path, help="also keep each screenshot in this folder")
    parser.add_argument("--url", help="a running `dagster dev` whose graph is materialised")
    parser.add_argument("--fast", action="store_true", help="tiny sample and model")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    if args.url:
        capture(args.url.rstrip("/"), args.out, args.shots, args.chromium)
        return
    with tempfile.TemporaryDirectory(prefix="oct_ui_") as tmp:
        home = Path(tmp, "dagster_home")
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "OCT_DATA_DIR": os.environ.get("OCT_DATA_DIR") or str(Path(tmp, "data")),
        }
        with dagster_dev(env, Path(tmp, "dagster_dev.log")) as url:
            run_id = materialize_local_graph(url, FAST_CONFIG if args.fast else {})
            print(f"materialised the local graph in run {run_id}")
            capture(url, args.out, args.shots, args.chromium)


if __name__ == "__main__":
    main()
