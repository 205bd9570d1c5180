"""Tests that run code in a fresh interpreter: a crash (heap corruption, a segfault) or a hang there
fails the test instead of ending the test run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest


def run_script(script: str, *args: str, timeout: float = 180) -> dict:
    """Run ``script`` (``python -c``) in a new session and return the JSON of its last stdout line;
    on a timeout kill the whole group (forked children too). A nonzero exit fails the test."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"timed out: {stdout[-3000:]}{stderr[-3000:]}")
    assert proc.returncode == 0, f"exit {proc.returncode}: {stdout[-3000:]}{stderr[-3000:]}"
    return json.loads(stdout.strip().splitlines()[-1])
