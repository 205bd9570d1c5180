"""The ``gpu-seg`` console script as a shell runs it: closed pipes, and the CLI without rich.

Every test starts the real console script (or ``python -c``) in a subprocess with the gpu_seg
package these tests import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gpu_seg

SRC = Path(gpu_seg.__file__).resolve().parent.parent
#: The console script that ``pip install`` puts beside the interpreter.
CONSOLE_SCRIPT = Path(sys.executable).with_name("gpu-seg")
#: 128 + SIGPIPE: what a shell reports for a program stopped by a closed pipe.
PIPE_CLOSED_STATUS = 141


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def run_into_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess:
    """Run ``gpu-seg argv`` with stdout a pipe whose reading end is already closed."""
    assert CONSOLE_SCRIPT.exists(), f"no console script at {CONSOLE_SCRIPT}: pip install -e ."
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head` that has already exited: every write gets EPIPE
    try:
        return subprocess.run(
            [str(CONSOLE_SCRIPT), *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["info"], PIPE_CLOSED_STATUS),
        (["info", "--json"], PIPE_CLOSED_STATUS),
        (["soak", "--frames", "2", "--warmup", "1", "--lose-every", "0", "--quiet"], PIPE_CLOSED_STATUS),
        (["--help"], 0),  # argparse itself ignores errors writing the help
    ],
    ids=["info", "info-json", "soak", "help"],
)
def test_a_closed_pipe_ends_the_command_quietly(argv, status):
    done = run_into_closed_pipe(argv)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == status, done.stderr


def test_a_closed_pipe_still_writes_the_json_file(tmp_path):
    path = tmp_path / "soak.json"
    done = run_into_closed_pipe(["soak", "--frames", "3", "--warmup", "1", "--quiet", "--json", str(path)])
    assert done.returncode == PIPE_CLOSED_STATUS and not done.stderr, done.stderr
    assert json.loads(path.read_text())["frames_returned"] == 4


def _run_without_rich(argv: list[str]) -> subprocess.CompletedProcess:
    """``gpu-seg argv`` in a Python where ``import rich`` fails, as without the ``cli`` extra."""
    code = f"import sys\nsys.modules['rich'] = None\nfrom gpu_seg.cli import main\nsys.exit(main({argv!r}))\n"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120, check=False
    )


def test_info_and_help_need_no_rich():
    done = _run_without_rich(["info"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("renderer ")
    done = _run_without_rich(["bench", "--help"])
    assert done.returncode == 0 and "--preset" in done.stdout, done.stderr
    done = _run_without_rich(["--help"])
    assert done.returncode == 0 and "soak" in done.stdout, done.stderr


@pytest.mark.parametrize("command", ["bench", "verify", "soak"])
def test_commands_that_draw_tables_name_the_cli_extra_without_rich(command):
    done = _run_without_rich([command, "--quiet"])
    assert done.returncode == 2
    assert 'pip install "gpu_seg[cli]"' in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""


def test_help_texts_show_no_rest_markup():
    """The commands' docstrings are their --help descriptions: ``literals`` printed their backticks."""
    import argparse

    from gpu_seg.cli import COMMANDS, build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == set(COMMANDS)
    for name, command in commands.items():
        assert "``" not in command.format_help(), name
