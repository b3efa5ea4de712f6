"""A PNG of an HTML report as a browser shows it, made with headless Chromium when one is installed:
for the docs' pictures of report.html and for checking its layout. Nothing requires it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from epiformer_cli.errors import EpiformerError
from epiformer_cli.io.files import atomic_path

log = logging.getLogger(__name__)

#: Where Debian's ``chromium`` package puts the browser; otherwise these names are looked up on PATH.
CHROMIUM_PATHS = ("/usr/bin/chromium",)
CHROMIUM_NAMES = ("chromium", "chromium-browser")
TIMEOUT_SECONDS = 120


def find_chromium() -> Optional[str]:
    """The Chromium executable, or None when there is none."""
    for candidate in CHROMIUM_PATHS:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 1600) -> bool:
    """Render ``html`` in headless Chromium and write the top ``width`` x ``height`` pixels of the
    page to ``png`` (atomically). Returns False, writing nothing, when Chromium is not installed.

    Chromium runs without network services (no QUIC, background networking, component updates or
    sync), with a new profile in a temporary folder that is removed afterwards, and with HOME and
    the XDG folders pointed there too, so that it leaves nothing in the user's home.
    Raises EpiformerError when Chromium fails, times out after 120 s or writes no image.
    """
    chromium = find_chromium()
    if chromium is None:
        log.info("no screenshot of %s: Chromium is not installed", html)
        return False
    url = Path(html).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="epiformer-chromium-") as folder:
        shot = Path(folder) / "screenshot.png"  # Chromium picks the format by the name's extension
        profile = Path(folder) / "profile"
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={shot}",
                   f"--window-size={int(width)},{int(height)}", url]
        env = dict(os.environ, HOME=folder, XDG_CONFIG_HOME=folder, XDG_CACHE_HOME=folder)
        try:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    errors="replace", timeout=TIMEOUT_SECONDS, env=env)
        except subprocess.TimeoutExpired:
            raise EpiformerError(f"Chromium did not render {html} within {TIMEOUT_SECONDS} s "
                                 f"(try it by hand: {chromium} --headless --screenshot {url})") from None
        if result.returncode != 0 or not shot.is_file() or shot.stat().st_size == 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise EpiformerError(f"Chromium wrote no screenshot of {html} (exit {result.returncode}: {last})")
        with atomic_path(png) as tmp:
            shutil.copyfile(shot, tmp)
    return True
