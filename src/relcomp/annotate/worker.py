"""The learner's trainer process: started once, it runs one ``relcomp`` command line after another
(``train`` rounds), so a round pays for starting Python and importing torch (about 5 s on two
cores) once per page, not once per round. The process is :mod:`relcomp.cli.worker` (the command
line's side; this is the learner's).

Protocol, one JSON line each way: the learner writes ``["train", ...]`` on the worker's stdin;
the worker runs it as the command line would, its output discarded, and answers on stdout
``{"rc": int, "error": str | null}`` (the last line the command wrote to stderr when it failed).
EOF on stdin ends the worker. A crash or a kill of the worker is a crash of the round in flight
only: the learner reports it, and the next round starts a new worker and resumes the round.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading


class Worker:
    """The learner's side: a worker process, started on first use and again after it died."""

    def __init__(self, env: dict[str, str] | None = None):
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        """Start the process now (it imports torch while the page serves its first pairs)."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = subprocess.Popen([sys.executable, "-m", "relcomp.cli.worker"], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                             env=self.env, bufsize=1)

    def run(self, argv: list[str]) -> tuple[int, str | None]:
        """Run one command line; (exit code, the error's last line). A worker that died mid-command
        answers (-9 or its exit code, "the trainer process stopped ...")."""
        self.start()
        proc = self.proc
        try:
            proc.stdin.write(json.dumps(argv) + "\n")
            proc.stdin.flush()
            answer = proc.stdout.readline()
        except (BrokenPipeError, OSError):
            answer = ""
        if not answer:
            rc = proc.wait()
            return rc or -1, f"the trainer process stopped (exit {rc})"
        result = json.loads(answer)
        return int(result["rc"]), result.get("error")

    def stop(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            self.proc = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


