"""``relcomp annotate --learn MODEL``: rounds of training as judgements arrive.

Each round is ``relcomp train MODEL --images DIR --comparisons SNAPSHOT ... --init-from PREVIOUS``
in a separate process (the page never waits for it, and a crash of the trainer is a crash of that
process only; the process lives from round to round, :mod:`relcomp.annotate.worker`, so a round
does not pay the 5 s of starting Python and torch), into an ordinary run folder ``OUT/round-NNN``: ``relcomp eval``, ``rank``,
``predict`` and ``export`` work on the latest one at any moment. The snapshot
(``OUT/round-NNN.csv``) is the comparisons file as the round began, copied under its lock.
``OUT/rounds.jsonl`` lists the finished rounds; on start the latest is served again, and a round
that a kill interrupted is continued (``relcomp train --resume``).

A round is ``steps`` (240) steps of min(128, judgements) pairs, validated and checkpointed four
times (so a killed round resumes from its last quarter). When: round N after ``first`` x 2^(N-1) judgements (20, 40, 80, 160 ...), and in between every ``every_s`` seconds (60) once ``min_new`` (10) new ones
exist. A failed round is one line in the server's log and a banner on the page; the next is tried
after ``min_new`` more judgements.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from ..checkpoint import has_checkpoint
from ..errors import ConfigError, DataError
from ..suggest import Suggester
from ..utils import append_jsonl, make_dir
from .live import LiveModel
from .session import Session
from .worker import Worker

BATCH = 128  # the models' default batch of compared pairs


class Learner:
    """The thread that starts rounds and swaps each finished one into the session."""

    def __init__(self, session: Session, model: str, out: Path, train_args: list[str], items: Path | None = None,
                 first: int = 20, every_s: float = 60.0, min_new: int = 10, steps: int = 240):
        self.session, self.model, self.out, self.train_args = session, model, Path(out), list(train_args)
        self.items = Path(items) if items else session.root
        self.first, self.every_s, self.min_new, self.steps = first, every_s, min_new, steps
        self.version, self.trained_on, self.last_round, self.last_time = 0, 0, None, 0.0
        self.failed_at: int | None = None
        self.stopping = threading.Event()
        self.worker = Worker(env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.thread = threading.Thread(target=self.loop, name="relcomp-learner", daemon=True)
        make_dir(self.out)

    def start(self) -> None:
        self.worker.start()  # it imports torch while the first judgements come in
        self.thread.start()

    def stop(self) -> None:
        """Stop after the round in flight is killed; its folder is resumed next time."""
        self.stopping.set()
        self.worker.stop()
        self.thread.join(timeout=10)

    def loop(self) -> None:
        try:
            self.resume()
            while not self.stopping.wait(0.5):
                n = self.session.log.count()
                if self.due(n):
                    self.round(n)
        except Exception as e:  # noqa: BLE001 - the page stays up; the error is one line and a banner
            self.report(f"the learner stopped: {type(e).__name__}: {e}")

    def due(self, n: int) -> bool:
        if n < self.first or (self.failed_at is not None and n < self.failed_at + self.min_new):
            return False
        if n >= self.first * 2 ** self.version:  # 20, 40, 80, 160 ... judgements: the n-th round
            return True
        return n - self.trained_on >= self.min_new and time.monotonic() - self.last_time >= self.every_s

    def folder(self, version: int) -> Path:
        return self.out / f"round-{version:03d}"

    def resume(self) -> None:
        """Serve the latest finished round again; continue one a kill interrupted."""
        rounds = self.finished()
        if rounds:
            self.adopt(rounds[-1]["version"], rounds[-1]["trained_on"])
        if self.folder(self.version + 1).exists():
            self.continue_pending()

    def continue_pending(self) -> bool:
        """Continue the round a kill interrupted from its last checkpoint (True); one that left no
        checkpoint is removed, to be trained anew (False)."""
        pending = self.folder(self.version + 1)
        if not has_checkpoint(pending):
            shutil.rmtree(pending, ignore_errors=True)
            return False
        snapshot = pending.with_suffix(".csv")
        trained_on = judgements_in(snapshot) if snapshot.exists() else 0
        self.run(self.version + 1, trained_on, ["train", "--resume", str(pending), "--quiet", "--no-eval"])
        return True

    def finished(self) -> list[dict]:
        return [r for r in finished_rounds(self.out) if self.folder(r["version"]).is_dir()]

    def round(self, n: int) -> None:
        if self.folder(self.version + 1).exists() and self.continue_pending():  # a failed round, retried
            return
        version = self.version + 1
        snapshot = self.folder(version).with_suffix(".csv")
        with self.session.log.lock:
            shutil.copyfile(self.session.log.path, snapshot)
        n = judgements_in(snapshot)
        samples = self.steps * min(BATCH, n)  # a round is `steps` steps of up to 128 pairs, however few are judged
        # on --features (their item names: the page's file names) a round reads them, not the images
        source = [] if "--features" in self.train_args else ["--images", str(self.session.root)]
        command = ["train", self.model, *source, "--comparisons", str(snapshot),
                "--samples", str(samples), "--eval-every", str(max(samples // 4, 1)), *self.train_args,
                "--out", str(self.folder(version)), "--quiet", "--no-eval"]
        if self.last_round is not None:
            command += ["--init-from", str(self.last_round)]
        self.run(version, n, command)

    def run(self, version: int, n: int, command: list[str]) -> None:
        with self.session.mutex:
            self.session.training = True
            self.session.changes += 1
        t = time.monotonic()
        rc, error = self.worker.run(command)
        if self.stopping.is_set():
            return
        if rc != 0:
            self.failed_at = n
            return self.report(f"round {version} failed: {error or f'exit {rc}'}")
        append_jsonl(self.out / "rounds.jsonl", {"version": version, "trained_on": n, "seconds": round(time.monotonic() - t, 2),
                                                 "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self.adopt(version, n)

    def adopt(self, version: int, n: int) -> None:
        """Load round ``version`` and serve it, with its suggestions."""
        folder = self.folder(version)
        live = LiveModel(folder, self.items, self.session.names, version, n)
        self.session.swap(live, suggested_pairs(self.session, open_suggester(folder, version), version))
        self.version, self.trained_on, self.last_round, self.last_time = version, n, folder, time.monotonic()
        self.failed_at = None
        with self.session.mutex:
            self.session.training = False
        print(f"relcomp annotate: model {version} (trained on {n:,} judgements) serves the page", flush=True)

    def report(self, message: str) -> None:
        print(f"relcomp annotate: {message}", file=sys.stderr, flush=True)
        self.session.fail(message)


def open_suggester(run_dir: Path, seed: int) -> Suggester | None:
    """The run's :class:`~relcomp.suggest.Suggester`, its model's outputs on every item computed
    once (a fixed ``--suggest-from`` run asks it at every refill of the queue: reloading it each
    time would stall the page while an ``hf:`` backbone embeds every photo again); None, said on
    stderr, where suggest cannot use the run."""
    try:
        return Suggester(run_dir, "cpu", seed)
    except ConfigError as e:
        print(f"relcomp annotate: suggest: {e}; random pairs", file=sys.stderr, flush=True)
        return None


def suggested_pairs(session: Session, suggester: Suggester | None, seed: int) -> list[tuple[str, str]]:
    """The pairs ``relcomp suggest`` picks on a run's model (its default strategy) given every
    judgement made so far (so the clusters strategy re-asks where the latest answers contradict the
    order); none (so random pairs) where it cannot."""
    n = min(session.batch, session.pool_left())
    if n <= 0 or suggester is None:
        return []
    judged = session.log.path.with_name(session.log.path.name + ".judged.csv")  # a snapshot, taken under the lock
    with session.log.lock:
        shutil.copyfile(session.log.path, judged)
    try:
        more = suggester.with_run_judged(suggester.read_judged(judged)) if judgements_in(judged) else None
    except DataError:  # judgements on items the run does not know: its own comparisons only
        more = None
    try:
        a, b, _, _ = suggester.ask(n, judged=more, seed=seed)
    except ConfigError as e:
        print(f"relcomp annotate: suggest: {e}; random pairs", file=sys.stderr, flush=True)
        return []
    names = suggester.names
    return [(names[x], names[y]) for x, y in zip(a.tolist(), b.tolist(), strict=True)]


def finished_rounds(out: Path) -> list[dict]:
    """The rounds ``out/rounds.jsonl`` lists as finished (a torn last line skipped)."""
    path = out / "rounds.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("version"), int) and isinstance(row.get("trained_on"), int):
            rows.append(row)
    return rows


def judgements_in(snapshot: Path) -> int:
    """The rows of a round's snapshot of the comparisons file (its lines but the header)."""
    with open(snapshot, encoding="utf-8-sig") as f:
        return sum(1 for _ in f) - 1
