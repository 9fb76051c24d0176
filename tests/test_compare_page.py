"""The comparison page in headless Chromium: it renders the host's list, each plugin model's with its reasons, and
the user's profile.

`screenshot` took the README's pictures (docs/compare-page*.png) of a running demo's page:
`python3 -c 'from tests.test_compare_page import screenshot; screenshot(URL, "docs/compare-page.png")'`."""
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from sparrow_llm.domain import Profile
from sparrow_llm.pipeline.rerank import run_rerank
from sparrow_llm.store import open_default_store


def chromium(*args, tmp: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed (apt-get install chromium; scripts/setup.sh does it)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=8000"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


def screenshot(url: str, out: Path | str, *, size: str = "1400,1000", tmp: Path | None = None) -> Path:
    """A PNG of the page at `url`, as Chromium renders it."""
    with tempfile.TemporaryDirectory() as scratch:
        chromium(f"--screenshot={Path(out).resolve()}", f"--window-size={size}", url, tmp=tmp or Path(scratch))
    return Path(out)


def test_compare_page_renders_host_and_plugin_columns(host, tmp_path):
    run_rerank(host.settings, "recent", users=[1], progress=False)
    profile = "Loves <b>tense</b> 90s crime dramas; rates comedies low."  # model output: shown as text
    store = open_default_store(host.settings)
    store.put_profiles([Profile(1, profile, "local", "palr-test", "0" * 64)])
    url = f"{host.base_url}/sparrow-llm/compare.html?id=1"
    dom = chromium("--dump-dom", url, tmp=tmp_path).stdout
    box = re.search(r'<section id="profile"([^>]*)>(.*?)</section>', dom, flags=re.S)
    assert box and "hidden" not in box.group(1), dom[:2000]
    assert "Loves &lt;b&gt;tense&lt;/b&gt; 90s crime dramas" in box.group(2)
    columns = re.findall(r'class="column[^"]*"[^>]*data-model="([^"]+)"', dom)
    assert "recent" in columns and len(columns) >= 2, columns
    cards = re.findall(r'data-movie-id="(\d+)"', dom)
    assert len(cards) >= 10
    assert "close to" in dom  # the plugin's reasons are shown
    assert "/posters/" in dom
    shot = screenshot(url, tmp_path / "compare-page.png", tmp=tmp_path)  # pytest keeps the last runs' tmp folders
    assert shot.is_file() and shot.stat().st_size > 10_000
