"""``python -m relcomp.cli.worker``: the trainer process of ``relcomp annotate --learn``
(:mod:`relcomp.annotate.worker` starts it and says the protocol): ``relcomp`` command lines read
one JSON list a line from stdin, each answered with one JSON line on stdout."""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys

from ..utils import exit_with_parent
from . import build_parser, main


def serve(stdin=None, stdout=None) -> None:
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    # Exit when the page's server is gone (killed: no EOF reaches a round in flight), so that no
    # orphan goes on writing a round folder that the next server resumes.
    exit_with_parent(0)
    build_parser()  # imports every command's module (torch too) now, while the page serves its first pairs
    for line in stdin:
        argv = json.loads(line)
        err = io.StringIO()
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:  # argparse's errors, --help
                rc = e.code if isinstance(e.code, int) else 2
            except Exception as e:  # noqa: BLE001 - one round failed; the worker serves the next
                print(f"{type(e).__name__}: {e}", file=sys.stderr)
                rc = 1
        lines = [x for x in err.getvalue().splitlines() if x.strip()]
        stdout.write(json.dumps({"rc": rc, "error": lines[-1] if rc and lines else None}) + "\n")
        stdout.flush()


if __name__ == "__main__":
    serve()
