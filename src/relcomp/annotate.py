"""``relcomp annotate``: a local web page to judge pairs of images, each judgement appended to the
comparisons file as it is made.

The server is the standard library's ``ThreadingHTTPServer``; the page is one HTML file with its
script (package data, no CDN: it works offline). What it guarantees:

- **Nothing lost.** Each judgement is one CSV line (``a,b,outcome,annotator,time``), written with
  one ``write`` on a file opened for appending, then flushed and fsynced, under a file lock
  (``<file>.lock``), so two annotators in two browsers (or two servers) never interleave lines.
  A kill can lose only the judgement in flight; a partial last line left by one is cut off when
  the server starts again. Restarting resumes: judged pairs are never offered again.
- **Safe by default.** It binds 127.0.0.1. Another ``--host`` needs ``--token``, and every request
  must then carry it (``?token=`` or the ``X-Relcomp-Token`` header). It serves the page, its
  JSON API and the image files of the folder that the image set lists, and nothing else: a path
  with ``..``, an absolute path, a name the set does not hold, or a symlink that leaves the folder
  gets 404. Request data is parsed as JSON and never evaluated; nothing is unpickled.

Pairs come from ``relcomp suggest`` on ``--suggest-from RUN`` (refilled from the same model
when the queue runs out), or else at random among the pairs not judged yet.
"""
from __future__ import annotations

import csv
import hmac
import io
import json
import mimetypes
import os
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
from filelock import FileLock

from .data.images import list_images
from .data.pairs import pair_keys
from .errors import ConfigError, DataError
from .suggest import candidate_pairs, suggest

OUTCOMES = {">": ">", "<": "<", "=": "="}
COLUMNS = ["a", "b", "outcome", "annotator", "time"]
LOCAL = ("127.0.0.1", "localhost", "::1")


class JudgementLog:
    """The comparisons file, appended to one fsynced line at a time under a file lock."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = FileLock(str(path) + ".lock")
        with self.lock:
            self.repair()
            if not path.exists() or path.stat().st_size == 0:
                self.append_line(",".join(COLUMNS) + "\n")
        with open(path, newline="") as f:
            self.columns = next(csv.reader(f))
        missing = [c for c in ("a", "b", "outcome") if c not in self.columns]
        if missing:
            raise DataError(f"{path}: the comparisons file has no column {', '.join(missing)}")

    def repair(self) -> None:
        """Cut off a partial last line (the judgement a kill interrupted)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
                f.flush()
                os.fsync(f.fileno())

    def append_line(self, line: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def row_text(self, row: dict[str, str]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([row.get(c, "") for c in self.columns])
        return buf.getvalue()

    def append(self, row: dict[str, str]) -> str:
        line = self.row_text(row)
        with self.lock:
            self.append_line(line)
        return line

    def remove(self, line: str) -> bool:
        """Take back ``line`` (the last time it occurs): the file is rewritten atomically."""
        with self.lock:
            text = self.path.read_text()
            k = text.rfind(line)
            if k < 0 or (k > 0 and text[k - 1] != "\n"):
                return False
            tmp = self.path.with_name(self.path.name + ".undo.tmp")
            with open(tmp, "w") as f:
                f.write(text[:k] + text[k + len(line):])
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            return True

    def judged(self) -> list[tuple[str, str]]:
        with open(self.path, newline="") as f:
            return [(r["a"], r["b"]) for r in csv.DictReader(f) if r.get("a") and r.get("b")]


class Session:
    """The image folder, the judgements and where the next pairs come from; shared by the
    server's threads."""

    def __init__(self, images: Path, comparisons: Path, suggest_from: str | None = None, question: str = "",
                 annotator: str = "", seed: int = 0, batch: int = 200):
        self.root = images.resolve()
        if not self.root.is_dir():
            raise DataError(f"{images}: not a folder of images")
        # files only: a symlink that leaves the folder is neither offered nor served
        self.names = [str(p.relative_to(self.root)) for p in list_images(self.root)
                      if p.resolve().is_relative_to(self.root)]
        if len(self.names) < 2:
            raise DataError(f"{images}: fewer than two images to compare")
        self.index = {n: k for k, n in enumerate(self.names)}
        self.log = JudgementLog(comparisons)
        self.suggest_from, self.question, self.annotator = suggest_from, question, annotator
        self.seed, self.batch = seed, batch
        self.queue: list[tuple[str, str]] = []
        self.mutex = threading.Lock()
        self.done_here = 0
        self.written: set[str] = set()  # lines this server wrote: the only ones undo may take back

    def judged_keys(self) -> np.ndarray:
        rows = [(self.index[a], self.index[b]) for a, b in self.log.judged() if a in self.index and b in self.index]
        if not rows:
            return np.empty(0, np.int64)
        a, b = np.array(rows).T
        return pair_keys(a, b, len(self.names))

    def refill(self, judged: np.ndarray) -> None:
        """Queue the next pairs, none of them in ``judged`` (pair keys)."""
        self.seed += 1
        if self.suggest_from:
            tmp = self.log.path.with_name(self.log.path.name + ".suggest.csv")
            try:
                suggest(self.suggest_from, min(self.batch, self.pool_left(judged)), out=tmp, seed=self.seed)
                with open(tmp, newline="") as f:
                    self.queue = [(r["a"], r["b"]) for r in csv.DictReader(f)]
                tmp.unlink()
                return
            except ConfigError as e:  # e.g. the run's own pool is used up: go on with random pairs
                print(f"relcomp annotate: suggest: {e}; random pairs from here", flush=True)
                self.suggest_from = None
        a, b = candidate_pairs(len(self.names), self.batch, judged, self.seed)
        flip = np.random.default_rng(self.seed).random(len(a)) < 0.5  # which image goes left
        self.queue = [(self.names[y], self.names[x]) if f else (self.names[x], self.names[y])
                      for x, y, f in zip(a, b, flip)]

    def pool_left(self, judged: np.ndarray) -> int:
        n = len(self.names)
        return max(n * (n - 1) // 2 - len(np.unique(judged)), 0)

    def next_pair(self) -> tuple[str, str] | None:
        with self.mutex:
            judged = self.judged_keys()  # the file is read once per call
            done = set(judged.tolist())
            n = len(self.names)
            while True:
                while self.queue:
                    a, b = self.queue.pop(0)
                    if a in self.index and b in self.index:
                        i, j = sorted((self.index[a], self.index[b]))
                        if i * n + j not in done:
                            return a, b
                if self.pool_left(judged) == 0:
                    return None
                self.refill(judged)
                if not self.queue:
                    return None

    def progress(self) -> dict[str, int]:
        return {"judged": len(self.log.judged()), "this_session": self.done_here}

    def image_path(self, name: str) -> Path | None:
        """The file of an image the set lists, if it really lies inside the folder; else None."""
        if name not in self.index or name.startswith("/") or ".." in Path(name).parts:
            return None
        path = (self.root / name).resolve()
        return path if path.is_relative_to(self.root) and path.is_file() else None


class Handler(BaseHTTPRequestHandler):
    session: Session
    token: str | None = None
    server_version = "relcomp-annotate"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per judgement instead
        pass

    def authorised(self, query: dict) -> bool:
        if self.token is None:
            return True
        given = self.headers.get("X-Relcomp-Token") or (query.get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, obj: Any, status: int = 200) -> None:
        self.send(status, json.dumps(obj).encode())

    def not_found(self) -> None:
        self.send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if not self.authorised(query):
            return self.send(HTTPStatus.FORBIDDEN, b"a token is required", "text/plain")
        if url.path == "/":
            page = resources.files("relcomp").joinpath("web", "annotate.html").read_bytes()
            return self.send(200, page, "text/html; charset=utf-8")
        if url.path == "/api/next":
            pair = self.session.next_pair()
            return self.send_json({"pair": pair, "progress": self.session.progress(),
                                   "question": self.session.question, "annotator": self.session.annotator})
        if url.path.startswith("/img/"):
            path = self.session.image_path(unquote(url.path[len("/img/"):]))
            if path is None:
                return self.not_found()
            return self.send(200, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        return self.not_found()

    def do_POST(self) -> None:
        url = urlparse(self.path)
        if not self.authorised(parse_qs(url.query)):
            return self.send(HTTPStatus.FORBIDDEN, b"a token is required", "text/plain")
        try:
            body = json.loads(self.rfile.read(min(int(self.headers.get("Content-Length", 0)), 65_536)) or b"{}")
        except (ValueError, json.JSONDecodeError):
            return self.send_json({"error": "the body is not JSON"}, 400)
        if url.path == "/api/judge":
            return self.judge(body)
        if url.path == "/api/undo":
            s, line = self.session, body.get("line")
            ok = isinstance(line, str) and line in s.written and s.log.remove(line)
            if ok:
                s.written.discard(line)
                s.done_here -= 1
            return self.send_json({"undone": ok, "progress": s.progress()})
        return self.not_found()

    def judge(self, body: dict) -> None:
        s = self.session
        a, b, outcome = body.get("a"), body.get("b"), body.get("outcome")
        if a not in s.index or b not in s.index or a == b or outcome not in OUTCOMES:
            return self.send_json({"error": "a and b must be two images of the folder; outcome one of > < ="}, 400)
        annotator = str(body.get("annotator") or s.annotator)[:100].replace("\n", " ").replace("\r", " ")
        line = s.log.append({"a": a, "b": b, "outcome": OUTCOMES[outcome], "annotator": annotator,
                             "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        s.done_here += 1
        s.written.add(line)
        print(f"{annotator or 'someone'}: {a} {OUTCOMES[outcome]} {b}", flush=True)
        self.send_json({"line": line, "progress": s.progress()})


def make_server(session: Session, host: str = "127.0.0.1", port: int = 8765,
                token: str | None = None) -> ThreadingHTTPServer:
    """The annotation server (not yet serving).

    Raises:
        ConfigError: a host other than localhost without a token.
    """
    if host not in LOCAL and not token:
        raise ConfigError(f"--host {host} makes the page reachable from other machines: give --token SECRET "
                          "(every request must then carry it)")
    handler = type("BoundHandler", (Handler,), {"session": session, "token": token})
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port") from None
