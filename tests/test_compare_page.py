"""The comparison page in headless Chromium: it renders the host's list and each plugin model's."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sparrow_llm.pipeline.rerank import run_rerank



def chromium(*args, tmp: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed (apt-get install chromium; scripts/setup.sh does it)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=8000"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


def test_compare_page_renders_host_and_plugin_columns(host, tmp_path):
    run_rerank(host.settings, "recent", users=[1], progress=False)
    url = f"{host.base_url}/sparrow-llm/compare.html?id=1"
    dom = chromium("--dump-dom", url, tmp=tmp_path).stdout
    columns = re.findall(r'class="column[^"]*"[^>]*data-model="([^"]+)"', dom)
    assert "recent" in columns and len(columns) >= 2, columns
    cards = re.findall(r'data-movie-id="(\d+)"', dom)
    assert len(cards) >= 10
    assert "close to" in dom  # the plugin's reasons are shown
    assert "/posters/" in dom
    shot = tmp_path / "compare-page.png"  # pytest keeps the last runs' tmp folders: look at it there
    chromium(f"--screenshot={shot}", "--window-size=1400,1000", url, tmp=tmp_path)
    assert shot.is_file() and shot.stat().st_size > 10_000
