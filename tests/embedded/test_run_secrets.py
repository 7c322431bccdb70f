"""`make run` is no deployment: what it starts gets its kept SECRET_KEY, even beside a DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_LOAD = "from app.config import Settings; print(Settings.from_env().secret_key)"


def test_run_hands_its_kept_secret_key_and_flower_password_to_what_it_starts(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SECRET_KEY", "FLOWER_"))}
    # Servers named by the environment: `run` starts none of its own, and the child sees a DATABASE_URL.
    env |= {"DATABASE_URL": "postgresql://db.invalid/x", "REDIS_URL": "redis://r.invalid/0"}
    env |= {"BATCHQ_VAR_DIR": str(tmp_path / "var"), "PYTHONPATH": str(ROOT)}
    child = f'{sys.executable} -c "{SETTINGS_LOAD}" && echo "flower $FLOWER_BASIC_AUTH"'
    done = subprocess.run(
        [sys.executable, "-m", "app.embedded", "run", "--", "sh", "-c", child],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    kept_key = (tmp_path / "var" / "secret_key").read_text().strip()
    kept_auth = (tmp_path / "var" / "flower_auth").read_text().strip()
    lines = done.stdout.splitlines()
    assert kept_key in lines and f"flower {kept_auth}" in lines
