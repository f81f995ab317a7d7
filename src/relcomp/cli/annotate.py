"""``relcomp annotate``: the judging page."""
from __future__ import annotations

from pathlib import Path

from ..annotate import Session, make_server
from .common import (
    subcommand,
)


def add_annotate_parser(sub) -> None:
    p = subcommand(sub, "annotate", "judge pairs of images in your browser; each judgement is appended to the comparisons file",
             "Serve a local web page that shows two images of --images side by side and asks --question. Keys: left "
             "arrow = the left image is greater, right arrow = the right one, = a tie, s skip, u undo. Each "
             "judgement is appended to --comparisons at once (a, b, outcome, annotator, time; flushed, fsynced, under "
             "a file lock, so several browsers and servers can share the file); stop with Ctrl-C and start again to "
             "resume. Pairs come from relcomp suggest on --suggest-from RUN, else at random among unjudged ones. The "
             "page binds 127.0.0.1; another --host needs --token, which every request must then carry (open "
             "http://HOST:PORT/?token=SECRET).")
    p.add_argument("--images", required=True, help="the image folder")
    p.add_argument("--comparisons", required=True, help="comparisons CSV to append to (created if missing)")
    p.add_argument("--suggest-from", default=None, metavar="RUN_DIR", help="ask relcomp suggest on this run for pairs")
    p.add_argument("--annotator", default="", help="the default annotator name written with each judgement")
    p.add_argument("--question", default="Which is greater?", help="the question shown above the images")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    p.add_argument("--token", default=None, help="a secret every request must carry (required for another --host)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random pairs")


def cmd_annotate(args) -> int:
    session = Session(Path(args.images), Path(args.comparisons), args.suggest_from, args.question, args.annotator,
                      args.seed)
    server = make_server(session, args.host, args.port, args.token)
    host, port = server.server_address[:2]
    query = f"?token={args.token}" if args.token else ""
    print(f"relcomp annotate: open http://{host}:{port}/{query}  ({len(session.names):,} images, "
          f"{session.progress()['judged']:,} judged so far in {args.comparisons}; Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print(f"stopped: {session.done_here:,} judgements this session, {session.progress()['judged']:,} in "
          f"{args.comparisons}")
    return 0
