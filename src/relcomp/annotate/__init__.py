"""``relcomp annotate``: a local web page to judge pairs of images, each judgement appended to the
comparisons file as it is made, and (``--learn``) a model retrained in the background on them.

- :mod:`.log`: the comparisons file (one fsynced line per judgement, under a file lock).
- :mod:`.session`: what the page serves: the queue of pairs, the judgements, the live model.
- :mod:`.live`: a round's model over the folder's images, and its running agreement.
- :mod:`.learner`: the rounds: ``relcomp train ... --init-from`` in a separate process.
- :mod:`.server`: the HTTP server (Starlette on uvicorn) and the guard every request passes.
"""
from typing import Any

from .log import JudgementLog, safe_text
from .session import Session

__all__ = ["JudgementLog", "Server", "Session", "make_app", "safe_text"]


def __getattr__(name: str) -> Any:
    """``Server`` and ``make_app`` on first use: the server's stack (uvicorn, Starlette) is 0.2 s
    that a command importing the package for its oracle or log does not need."""
    if name in ("Server", "make_app"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
