"""The README's quickstart, run as written: each command of its block in turn, in a folder that
holds `photos/` (300 MNIST images of the digits 0-4). The one change is `--port 0` on the judging
page, so that the test takes a free port; a simulated annotator judges through the page's HTTP API
where a person would click, and Ctrl-C (SIGINT) stops the page as it would."""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_digit_photos
from relcomp.annotate.oracle import simulate

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.mnist, pytest.mark.slow]


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- quickstart:[^>]*-->\n```bash\n(.*?)```", text, flags=re.S)
    assert block, "the README's quickstart block is marked <!-- quickstart: ... -->"
    return [line.split(" #")[0].strip() for line in block[1].splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def relcomp(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "relcomp", command
    return [sys.executable, "-m", "relcomp", *words[1:]]


def test_the_quickstart_runs_as_written(mnist, tmp_path):
    labels, _ = write_digit_photos(tmp_path / "photos", mnist)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    commands = quickstart_commands()
    assert commands[0].startswith("relcomp annotate") and len(commands) >= 4
    for command in commands:
        if command.startswith("relcomp annotate"):
            page = subprocess.Popen(relcomp(command) + ["--port", "0"], cwd=tmp_path, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            line = page.stdout.readline()
            assert "open http://" in line, line + page.stderr.read()
            simulate(line.split("open ")[1].split()[0], labels, 60)
            page.send_signal(signal.SIGINT)
            assert page.wait(timeout=120) in (0, 130), page.stderr.read()  # 130: stopped by Ctrl-C, as a shell says
            continue
        done = subprocess.run(relcomp(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    assert len((tmp_path / "judged.csv").read_text().splitlines()) == 61
    assert (tmp_path / "runs" / "mine" / "best.safetensors").exists()
    assert len((tmp_path / "runs" / "mine" / "rank-photos" / "ranking.csv").read_text().splitlines()) == 301
    assert len((tmp_path / "ask.csv").read_text().splitlines()) == 101
