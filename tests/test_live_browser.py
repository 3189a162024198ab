"""The live page in a real browser: serve.sh on the CPU with a tiny avatar, driven by headless Chromium
(Debian's chromium through playwright) with an audio file and a fake microphone playing a WAV file."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from data_utils.audio_io import SAMPLE_RATE, load_audio
from tests.test_predict import trained  # noqa: F401  (fixture: tiny avatar + dataset, 8 fps, 32 px)

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FPS = 8.0
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (bash scripts/setup.sh installs it when run as root)",
)


class Served:
    """A serve.sh process and the lines it printed."""

    def __init__(self, argv: list[str]) -> None:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self.read, daemon=True).start()

    def read(self) -> None:
        """Forward the process's output lines to the queue."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 90.0) -> re.Match:
        """Return the first printed line matching `pattern`; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match
        pytest.fail(f"serve.sh never printed {pattern!r}; output: {''.join(self.seen)}")


@pytest.fixture(scope="module")
def server(trained: tuple[Path, Path]) -> Iterator[tuple[str, Served]]:  # noqa: F811
    """serve.sh on a free port, CPU -> (page URL, process); stopped with Ctrl-C (SIGINT) afterwards."""
    argv = [str(ROOT / "serve.sh"), "--model_path", str(trained[0]), "--reference_path", str(trained[1])]
    served = Served([*argv, "--port", "0", "--device", "cpu"])
    url = served.wait_for(r"serving on (http://127\.0\.0\.1:\d+/)").group(1)
    yield url, served
    if served.proc.poll() is None:
        served.proc.kill()


@pytest.fixture(scope="module")
def browser(speech_wav: Path) -> Iterator[object]:
    """Headless Chromium whose microphone plays the speech WAV once."""
    from playwright.sync_api import sync_playwright

    flags = [
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={speech_wav}%noloop",
        "--autoplay-policy=no-user-gesture-required",
    ]
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=flags)
        yield chromium
        chromium.close()


def open_page(browser: object, url: str) -> tuple[object, list[str]]:
    """A new tab on the page, connected; returns it and the list its console errors are collected into."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("window.liveStats && window.liveStats.state === 'ready'", timeout=30000)
    return page, errors


def test_page_streams_a_file_in_sync(server: tuple[str, Served], browser: object, speech_wav: Path) -> None:
    page, errors = open_page(browser, server[0])
    page.set_input_files("#file", str(speech_wav))
    page.select_option("#camera", "orbit")
    page.click("#start")
    page.wait_for_function("window.liveStats.state === 'done'", timeout=60000)
    page.wait_for_function("document.querySelector('#start').disabled === false", timeout=30000)
    stats = page.evaluate("window.liveStats")
    expected = round(len(load_audio(speech_wav)) / SAMPLE_RATE * FPS)
    assert stats["frames"] == stats["done"]["frames"] == expected
    assert stats["drawn"] > expected // 2  # drawn on the audio clock as it played
    assert stats["firstFrameMs"] > 0 and stats["errors"] == [] and errors == []
    status = page.inner_text("#status")
    assert status.startswith("done") and f"{expected} frames" in status and "error" not in status
    assert "look-ahead" in page.inner_text("#note")
    page.close()


def test_microphone_frames_follow_the_audio(server: tuple[str, Served], browser: object) -> None:
    page, errors = open_page(browser, server[0])
    page.check("input[value=mic]")
    page.click("#start")
    page.wait_for_function("window.liveStats.frames >= 8", timeout=30000)
    time.sleep(1.5)
    page.click("#stop")
    page.wait_for_function("window.liveStats.state === 'done'", timeout=30000)
    stats = page.evaluate("window.liveStats")
    seconds = stats["samplesSent"] / SAMPLE_RATE
    assert seconds > 1.0
    assert stats["frames"] == stats["done"]["frames"] == round(seconds * FPS)
    assert stats["latencyMs"] is not None and stats["errors"] == [] and errors == []
    page.close()


def test_ctrl_c_stops_the_server(server: tuple[str, Served]) -> None:
    served = server[1]
    served.proc.send_signal(signal.SIGINT)
    assert served.proc.wait(timeout=30) == 130
    served.wait_for("server stopped", timeout=5)
