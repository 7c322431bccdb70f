"""The browser that bench.live and the browser tests drive: Debian's Chromium, never a downloaded one."""

import os

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")

# Headless on a machine without a screen or network: no sandbox (containers run
# it as root), no GPU, and none of the background traffic a profile would start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
