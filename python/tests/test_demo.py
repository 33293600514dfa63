"""The example script runs, drives the real SDK, and prints no secret."""

from __future__ import annotations

import os
import subprocess
import sys

DEMO = os.path.join(os.path.dirname(__file__), "..", "examples", "zoho_sdk_demo.py")


def test_the_demo_runs_and_prints_no_secret(tmp_path):
    out = subprocess.run([sys.executable, DEMO, str(tmp_path / "tokens")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert "2 refreshes" in text
    assert text.count("users: ana@example.com") == 3
    for secret in ("demo-client-secret", "1000.demo-refresh-token", "1000.access."):
        assert secret not in text
