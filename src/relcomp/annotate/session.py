"""What a judging page serves: the image folder, the judgements, the queue of pairs to ask, the
model of the latest round (if any) and its running agreement with the judgements."""
from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.images import list_images
from ..data.pairs import pair_keys
from ..errors import DataError
from ..suggest import candidate_pairs
from .live import Agreement, LiveModel
from .log import JudgementLog, pair_key, safe_text

RESERVE_S = 600.0   # a pair served to one page is not served to another for this long, unless judged first
MAX_QUEUE = 2000


class Session:
    """Shared by the server's requests and the learner's thread; every change under ``mutex``."""

    def __init__(self, images: Path, comparisons: Path, question: str = "", annotator: str = "",
                 seed: int | None = None, batch: int = 200, goal: int | None = None):
        self.root = Path(images).resolve()
        if not self.root.is_dir():
            raise DataError(f"{images}: not a folder of images")
        # files only: a symlink that leaves the folder is neither offered nor served
        self.names = [str(p.relative_to(self.root)) for p in list_images(self.root)
                      if p.resolve().is_relative_to(self.root)]
        if len(self.names) < 2:
            raise DataError(f"{images}: fewer than two images to compare")
        self.index = {n: k for k, n in enumerate(self.names)}
        self.log = JudgementLog(comparisons)
        self.agreement = Agreement(Path(str(comparisons) + ".model.csv"), self.log)
        self.question, self.annotator, self.goal = question, annotator, goal
        # two servers on one file draw different random pairs unless a seed is given
        self.seed = secrets.randbits(32) if seed is None else seed
        self.batch = batch
        self.queue: deque[tuple[str, str]] = deque()
        self.reserved: dict[tuple[str, str], float] = {}
        self.mutex = threading.Lock()
        self.done_here = 0
        self.written: set[str] = set()  # lines this server wrote: the only ones undo may take back
        self.model: LiveModel | None = None
        # where more pairs come from when the queue runs out: random ones unless this is set (a fixed
        # --suggest-from run asks suggest again; with --learn each round refills the queue instead)
        self.refill: Callable[[], list[tuple[str, str]]] | None = None
        self.history: list[dict] = []     # one entry per model version
        self.training = False
        self.error: str | None = None
        self.changes = 0                   # bumped on every change the live panels show

    # -- pairs -----------------------------------------------------------------------------------
    def pool_left(self) -> int:
        n = len(self.names)
        return n * (n - 1) // 2 - len(self.log.pairs)

    def next_pair(self) -> tuple[str, str] | None:
        """The next pair no one judged and no other page holds; None when every pair is judged."""
        with self.mutex:
            self.log.sync()  # another server may have appended
            now = time.monotonic()
            self.reserved = {k: t for k, t in self.reserved.items() if t > now and k not in self.log.pairs}
            for _ in range(3):
                while self.queue:
                    a, b = self.queue.popleft()
                    key = pair_key(a, b)
                    if key not in self.log.pairs and key not in self.reserved and a in self.index and b in self.index:
                        self.reserved[key] = now + RESERVE_S
                        return a, b
                if self.pool_left() <= len(self.reserved):
                    return None
                self.queue.extend((self.refill() if self.refill else []) or random_pairs(self))
            return None

    def release(self, a: str, b: str) -> None:
        """A page skipped the pair: others may have it."""
        with self.mutex:
            self.reserved.pop(pair_key(a, b), None)

    # -- judgements ------------------------------------------------------------------------------
    def judge(self, a: str, b: str, outcome: str, annotator: str) -> str | None:
        """Record the current model's prediction for the pair, then the judgement; the line written,
        or None when the pair was judged already."""
        with self.mutex:
            self.log.sync()
            if pair_key(a, b) in self.log.pairs:  # before a prediction is recorded: it would replace the first one's
                self.reserved.pop(pair_key(a, b), None)
                return None
            if self.model is not None:
                self.agreement.record(a, b, self.model)
            line = self.log.append({"a": a, "b": b, "outcome": outcome, "annotator": safe_text(annotator),
                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            self.reserved.pop(pair_key(a, b), None)
            if line is None:
                return None
            self.done_here += 1
            self.written.add(line)
            self.changes += 1
            return line

    def undo(self, line: str) -> bool:
        with self.mutex:
            ok = line in self.written and self.log.remove(line)
            if ok:
                self.written.discard(line)
                self.done_here -= 1
                self.changes += 1
            return ok

    # -- the model -------------------------------------------------------------------------------
    def swap(self, model: LiveModel, pairs: list[tuple[str, str]]) -> None:
        """Serve a new round's model and its suggestions from now on."""
        with self.mutex:
            self.model = model
            self.queue = deque(pairs[:MAX_QUEUE])
            self.error = None
            self.history.append({"version": model.version, "trained_on": model.trained_on,
                                 "time": model.time, "agreement": None})
            self.changes += 1

    def fail(self, message: str) -> None:
        with self.mutex:
            self.error, self.training = message, False
            self.changes += 1

    def progress(self) -> dict[str, int | None]:
        return {"judged": self.log.count(), "this_session": self.done_here, "goal": self.goal}

    def image_path(self, name: str) -> Path | None:
        """The file of an image the set lists, if it really lies inside the folder; else None."""
        if name not in self.index or name.startswith("/") or ".." in Path(name).parts:
            return None
        path = (self.root / name).resolve()
        return path if path.is_relative_to(self.root) and path.is_file() else None


def random_pairs(session: Session) -> list[tuple[str, str]]:
    """A batch of pairs not judged yet, uniformly at random, each shown in a random order."""
    session.seed += 1
    index, names = session.index, session.names
    rows = [(index[a], index[b]) for a, b in session.log.pairs if a in index and b in index]
    judged = pair_keys(*np.array(rows).T, len(names)) if rows else np.empty(0, np.int64)
    a, b = candidate_pairs(len(names), session.batch, judged, session.seed)
    flip = np.random.default_rng(session.seed).random(len(a)) < 0.5  # which image goes left
    return [(names[y], names[x]) if f else (names[x], names[y]) for x, y, f in zip(a, b, flip)]


def status_of(session: Session) -> dict:
    """What ``GET /api/status`` answers: the model's version, when and on how many judgements it
    was trained, its running agreement (and by version), the counts, and any error of the learner."""
    with session.mutex:
        session.log.sync()
        m = session.model
        recent, n = session.agreement.recent()   # each scores only the rows new since the last call
        per_version = session.agreement.per_version()
        history = [dict(h, agreement=per_version.get(h["version"])) for h in session.history]
        return {"version": m.version if m else 0, "trained_on": m.trained_on if m else 0,
                "trained_at": m.time if m else None, "agreement": recent, "agreement_n": n, "history": history,
                "training": session.training, "error": session.error, "by_annotator": session.log.by_annotator(),
                "changes": session.changes, **session.progress()}
