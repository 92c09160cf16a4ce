"""A real Label Studio server for the tests, in a virtualenv of its own (its `openai<2` pin clashes with litellm's),
bound to 127.0.0.1 only, with a reviewer account and a legacy API token; stopped by its PID."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSION = "1.23.2"
VENV = ROOT / ".venv-labelstudio"
USER, PASSWORD = "reviewer@example.com", "kdstudio-review-pass-1"
TOKEN = "5f0c1d2e3a4b5c6d7e8f90a1b2c3d4e5f6a7b8c9"


def ensure_venv() -> Path:
    """Build (once) the virtualenv that holds label-studio, with the script the README gives users."""
    base = getattr(sys, "_base_executable", sys.executable)  # the interpreter behind the project's venv
    # Test workers run in parallel (pytest-xdist): one builds, the others wait for it and find the stamp.
    with (ROOT / ".venv-labelstudio.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["bash", str(ROOT / "scripts" / "labelstudio.sh")], check=True,
                       env={**os.environ, "PYTHON": base})
    assert (VENV / "kdstudio-stamp").read_text().strip() == VERSION
    return VENV / "bin" / "label-studio"


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudio:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300) -> LabelStudio:
        executable = ensure_venv()
        self.port = free_port()
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data), "LABEL_STUDIO_USERNAME": USER,
               "LABEL_STUDIO_PASSWORD": PASSWORD, "LABEL_STUDIO_USER_TOKEN": TOKEN,
               "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "",
               "FRONTEND_SENTRY_DSN": "",
               # What a user sets to run `kdstudio review serve` beside it: Label Studio 1.23 refuses to call
               # local addresses (ML backends, webhooks) otherwise.
               "SSRF_PROTECTION_ENABLED": "false", "ML_BLOCK_LOCAL_IP": "false"}
        env.pop("VIRTUAL_ENV", None)
        log = (self.workdir / "label-studio.log").open("wb")
        # --host is the public URL; --internal-host is what it binds to.
        self.process = subprocess.Popen(
            [str(executable), "start", "--internal-host", "127.0.0.1", "--port", str(self.port), "--no-browser"],
            cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Label Studio exited: {(self.workdir / 'label-studio.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"Label Studio did not answer within {timeout:.0f} s")

    def listening(self) -> list[str]:
        """The local addresses the server's process listens on (from `ss`)."""
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
        return [line.split()[3] for line in out.splitlines() if self.process and f"pid={self.process.pid}," in line]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the server and anything it spawned
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
