"""The ``numbacnn`` command's three spellings run one ``main``, with one-line errors."""

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import numbacnn
from numbacnn.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _run(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("module", ["numbacnn", "numbacnn.cli"])
def test_python_dash_m_runs_the_command(module):
    done = _run("-m", module, "--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"numbacnn {numbacnn.__version__}"), done.stderr
    # an error raised inside a command module is the CliError main catches: one line, status 2
    done = _run("-m", module, "summary", "--data", "digits", "--input-shape", "1,8,8")
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == "error: give --data or --input-shape, not both\n"


def test_the_console_script_entry_point_is_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["numbacnn"].partition(":")
    assert getattr(importlib.import_module(module), attr) is main


def test_every_command_is_listed_in_help(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("layers", "train", "evaluate", "summary", "warmup", "new-plugin"):
        assert command in out
