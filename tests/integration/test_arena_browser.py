"""The arena in a real browser: `llm-lifecycle arena` with two tiny model folders (their servers started by
infra/serve.py), the page driven in headless Chromium by Playwright: a prompt, two streamed replies, votes, the
names revealed, the leaderboard updated; a script tag in a prompt shown as text; nothing fetched from outside.

Setup (once per machine, ≈ 1 min): `apt-get install -y chromium` (Debian's build; Playwright's own browser download
is not used) and `pip install -c infra/constraints.txt playwright==1.65.2`. The test skips without them.
With ARENA_SCREENSHOTS=DIR it saves the page and the leaderboard as DIR/arena.png and DIR/arena-leaderboard.png.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from infra.serve import free_port
from tests.integration.test_serve import model_dir  # noqa: F401 (the tiny chat model fixture)

CHROMIUM = Path("/usr/bin/chromium")
BIN = Path(sys.executable).parent
TIMEOUT_MS = 120_000  # a reply of a few tokens from a model server on a busy 2-core CPU

pytestmark = [
    pytest.mark.serve,
    pytest.mark.heavy,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: apt-get install -y chromium"),
]
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -c infra/constraints.txt playwright==1.65.2")


@pytest.fixture(scope="module")
def arena_url(model_dir, tmp_path_factory):  # noqa: F811
    """`llm-lifecycle arena` on two copies of the tiny model (two contestants), in a throw-away workspace;
    Ctrl-C at the end, which must stop the model servers it started."""
    ws = tmp_path_factory.mktemp("arena-ws")
    folders = [shutil.copytree(model_dir, ws / name) for name in ("tiny-a", "tiny-b")]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {
        "LLM_LIFECYCLE_WORKSPACE": str(ws), "HF_HUB_OFFLINE": "1"}
    command = [str(BIN / "llm-lifecycle"), "arena", *map(str, folders), "--port", str(port), "--max-tokens", "24",
               "--temperature", "1.0", "--db", f"sqlite:///{ws / 'votes.db'}"]
    log = open(ws / "arena.log", "w")
    arena = subprocess.Popen(command, env=env, cwd=ws, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/api/settings", arena, ws / "arena.log")
        yield url
    finally:
        arena.send_signal(signal.SIGINT)
        arena.wait(timeout=60)
        log.close()
    servers = json.loads((ws / ".llm-lifecycle/stack/model-servers.json").read_text())
    assert servers == {}, f"the arena left model servers running: {servers}"


def _wait_for(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llm-lifecycle arena exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the arena did not answer at {url} within {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def page(arena_url):
    """A headless Chromium page that may reach the arena and nothing else."""
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        foreign = []

        def loopback_only(route):
            if route.request.url.startswith(arena_url):
                return route.continue_()
            foreign.append(route.request.url)
            return route.abort()

        tab.route("**/*", loopback_only)
        tab.goto(arena_url)
        yield tab
        browser.close()
    assert foreign == [], f"the page asked for things outside the arena: {foreign}"


def play(page, prompt: str) -> None:
    """Send `prompt` and wait until both replies have streamed to the end."""
    page.fill("#prompt", prompt)
    page.click("#send")
    for side in ("a", "b"):
        page.wait_for_selector(f"#reply-{side}[data-state=done]", timeout=TIMEOUT_MS)


def test_prompt_two_streamed_replies_vote_reveal_and_leaderboard(page):
    screenshots = os.environ.get("ARENA_SCREENSHOTS")
    votes = ["a", "b", "tie"]
    for number, choice in enumerate(votes, start=1):
        if number > 1:
            page.click("#new-round")
        play(page, "Write one friendly sentence about foxes.")
        for side in ("a", "b"):
            assert int(page.get_attribute(f"#reply-{side}", "data-chunks")) > 1  # streamed, not sent whole
            assert page.inner_text(f"#reply-{side}").strip()
        assert page.inner_text("#name-a") == page.inner_text("#name-b") == ""  # anonymous until the vote
        assert page.is_enabled(f"#vote-{choice}")
        if screenshots and number == 1:
            page.screenshot(path=str(Path(screenshots) / "arena.png"), full_page=True)
        page.click(f"#vote-{choice}")
        page.wait_for_selector("#reveal:not([hidden])")
        names = {page.inner_text("#name-a").removeprefix(": "), page.inner_text("#name-b").removeprefix(": ")}
        assert {name.split("/")[0] for name in names} == {"tiny-a", "tiny-b"}
        assert "recorded" in page.inner_text("#reveal")

    page.click("#tab-board")
    # (wait_for_function would evaluate a string, which the page's Content-Security-Policy forbids: good)
    playwright_api.expect(page.locator("#board-summary")).to_have_text(re.compile(f"^{len(votes)} votes"),
                                                                       timeout=30_000)
    rows = page.locator("#scores tbody tr")
    assert rows.count() == 2
    assert [rows.nth(i).locator("td").nth(4).inner_text() for i in range(2)] == ["3", "3"]
    assert page.locator("#win-rate tbody tr").count() == 2
    if screenshots:
        page.screenshot(path=str(Path(screenshots) / "arena-leaderboard.png"), full_page=True)


def test_markup_in_a_prompt_is_shown_as_text_and_bad_prompts_get_a_message(page):
    attack = "<script>window.pwned = 1</script><b>bold</b><img src=x onerror=\"window.pwned = 2\">"
    play(page, attack)
    assert page.inner_text("#asked-text") == attack  # shown literally
    assert page.locator("#asked-text b, #asked-text img, #asked-text script").count() == 0
    assert page.evaluate("window.pwned") is None

    page.click("#new-round")
    page.fill("#prompt", "   ")
    page.click("#send")
    assert page.inner_text("#notice") == "Write a prompt first: it is empty."
    page.fill("#prompt", "x" * 4001)
    page.click("#send")
    assert "the limit is 4,000" in page.inner_text("#notice")
