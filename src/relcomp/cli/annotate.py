"""``relcomp annotate``: the judging page, and with ``--learn`` a model that learns while people judge."""
from __future__ import annotations

from pathlib import Path

from ..config import resolve
from ..errors import ConfigError
from .common import count_arg
from .parser import Parser, subcommand
from .train import add_train_parser, train_config

# the options of `relcomp train` a --learn round takes, passed on as given: (type, what it is)
TRAIN_OPTIONS = {"classes": (int, "K ordered classes of the weak model"), "backbone": (str, "paper, mlp or hf:MODEL"),
                 "features": (str, "precomputed vectors instead of pixels (items named as the images)"),
                 "relation": (str, "gt (ties dropped) or ge"), "annotator_model": (str, "none or flip"),
                 "unlabeled": (str, "what the images nobody compared teach: auto, off, balance, clusters, iic"),
                 "unlabeled_batch": (int, "unlabeled images per step"), "augment": (str, "off, shift, affine, elastic"),
                 "image_size": (int, "images resized to SIZE x SIZE"), "channels": (int, "1 grayscale, 3 RGB"),
                 "loss": (str, "the weak model's loss"), "labels": (str, "a labels CSV, for each round's own figures"),
                 "batch_size": (int, "compared pairs per step"), "lr": (float, "Adam learning rate"),
                 "data_dir": (str, "relcomp's cache folder")}


def add_annotate_parser(sub) -> None:
    p = subcommand(sub, "annotate", None,
             "Serve a local web page that shows two images of --images side by side and asks --question. Keys: left "
             "arrow (or click the left image) = the left image is greater, right arrow = the right one, = a tie, s "
             "skip, u undo, ? help. Each judgement is appended to --comparisons at once (a, b, outcome, annotator, "
             "time; fsynced, under a file lock, so several browsers and servers can share the file); stop with "
             "Ctrl-C and start again to resume.\n\n"
             "--learn MODEL trains MODEL in the background as judgements arrive: round N is `relcomp train MODEL "
             "--images DIR --comparisons OUT/round-N.csv ... --init-from OUT/round-(N-1)` in its own process, after "
             "20 judgements, then each time they double and every --learn-every seconds in between; each round's "
             "model then picks the next pairs (relcomp suggest) and its prediction for each pair is recorded before "
             "the judgement (COMPARISONS.model.csv): the page shows how often it agreed with the last 50, an honest "
             "held-out estimate. /sorted shows the images in the model's order.\n\n"
             "Without --learn, pairs come from relcomp suggest on --suggest-from RUN, else at random. The page binds "
             "127.0.0.1; another --host needs --token, which every request must then carry (open "
             "http://HOST:PORT/?token=SECRET). API: GET /api/next, POST /api/judge {a, b, outcome, annotator}, "
             "POST /api/undo {line}, POST /api/skip {a, b}, GET /api/status, GET /api/order, GET /api/events (SSE).")
    p.add_argument("--images", required=True, help="the image folder")
    p.add_argument("--comparisons", required=True, help="comparisons CSV to append to (created if missing)")
    p.add_argument("--suggest-from", default=None, metavar="RUN_DIR", help="ask relcomp suggest on this run for pairs")
    p.add_argument("--annotator", default="", help="the default annotator name written with each judgement")
    p.add_argument("--question", default="Which is greater?", help="the question shown above the images")
    p.add_argument("--goal", type=count_arg, default=None, help="judgements to aim for (shown on the page)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    p.add_argument("--token", default=None, help="a secret every request must carry (required for another --host)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random pairs (default: a fresh one, so two "
                   "servers on one file ask different pairs)")
    learn = p.add_argument_group("learning while you judge (--learn)", "--classes ... --data-dir are passed to every "
                                 "round's relcomp train as given (see relcomp train --help)")
    learn.add_argument("--learn", default=None, choices=["weak", "siamese", "ranker"],
                       help="train this model in the background as judgements arrive")
    learn.add_argument("--out", default=None, help="folder of the rounds (default: COMPARISONS.rounds)")
    learn.add_argument("--round-steps", type=int, default=240, help="training steps per round, each of min(128, "
                       "judgements) compared pairs and the unlabeled images (7-17 s for 2,000 images on 2 cores with "
                       "bf16; 60 steps took 2-4 s and left the model at 47%% instead of 66%% after 640 judgements)")
    learn.add_argument("--learn-every", type=float, default=60.0, help="seconds between rounds while new "
                       "judgements exist (besides a round each time the judgements double)")
    learn.add_argument("--first-round", type=int, default=20, help="judgements before the first round")
    for name, (kind, text) in TRAIN_OPTIONS.items():
        learn.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=text)


def train_args(args) -> list[str]:
    """The options each round's `relcomp train` gets."""
    out = []
    for name in TRAIN_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            out += [f"--{name.replace('_', '-')}", str(value)]
    return out


def check_rounds(args) -> None:
    """Refuse at start what every round would refuse: the round's `relcomp train` command line,
    parsed by train's own parser (exit 2 with its one line) and its config resolved."""
    parser = Parser(prog="relcomp annotate --learn")
    add_train_parser(parser.add_subparsers(dest="command"))
    source = [] if args.features else ["--images", args.images]  # rounds on --features read them instead
    rounds = parser.parse_args(["train", args.learn, *source, "--comparisons", args.comparisons,
                                "--samples", "1", *train_args(args)])
    resolve(train_config(rounds))


def cmd_annotate(args) -> int:
    # imported here: the server's stack (uvicorn, Starlette) is 0.2 s that no other command needs
    from ..annotate import Server, Session
    from ..annotate.learner import Learner, open_suggester, suggested_pairs
    from ..annotate.live import LiveModel

    if args.learn and args.suggest_from:
        raise ConfigError("--learn picks the pairs from its own rounds; leave out --suggest-from")
    if args.learn:
        check_rounds(args)
    session = Session(Path(args.images), Path(args.comparisons), args.question, args.annotator, args.seed, goal=args.goal)
    learner = None
    if args.suggest_from:
        run = Path(args.suggest_from)
        live = LiveModel(run, session.root, session.names, 1, 0)  # first: a folder that is no run is exit 2
        suggester = open_suggester(run, session.seed)  # once: the run's model does not change
        session.swap(live, suggested_pairs(session, suggester, session.seed))
        session.refill = lambda: suggested_pairs(session, suggester, session.seed + session.log.count() + 1)
    server = Server(session, args.host, args.port, args.token)
    if args.learn:
        out = Path(args.out) if args.out else Path(str(args.comparisons) + ".rounds")
        learner = Learner(session, args.learn, out, train_args(args), items=args.features, first=args.first_round,
                          every_s=args.learn_every, steps=args.round_steps)
        learner.start()
    print(f"relcomp annotate: open {server.url()}  ({len(session.names):,} images, {session.log.count():,} judged "
          f"so far in {args.comparisons}; Ctrl-C to stop)", flush=True)
    try:
        server.serve()
    finally:
        if learner is not None:
            learner.stop()
    print(f"stopped: {session.done_here:,} judgements this session, {session.log.count():,} in {args.comparisons}")
    return 0
