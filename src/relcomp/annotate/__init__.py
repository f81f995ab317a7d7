"""``relcomp annotate``: a local web page to judge pairs of images, each judgement appended to the
comparisons file as it is made, and (``--learn``) a model retrained in the background on them.

- :mod:`.log`: the comparisons file (one fsynced line per judgement, under a file lock).
- :mod:`.session`: what the page serves: the queue of pairs, the judgements, the live model.
- :mod:`.live`: a round's model over the folder's images, and its running agreement.
- :mod:`.learner`: the rounds: ``relcomp train ... --init-from`` in a separate process.
- :mod:`.server`: the HTTP server (Starlette on uvicorn) and the guard every request passes.
"""
from .log import JudgementLog, safe_text
from .server import Server, make_app
from .session import Session

__all__ = ["JudgementLog", "Server", "Session", "make_app", "safe_text"]
