"""``relcomp suggest``: which pairs to have judged next.

One backbone pass gives every item's output; candidate pairs are drawn at random among the
run's items (never a pair already judged, in either order, never an item with itself) and
scored by a strategy; the best N are written as a comparisons file to judge (``a,b,score``),
items named exactly as the run's comparisons name them (file names, ``.npy`` row indices, or
MNIST train-split indices).

Strategies (:data:`STRATEGIES`):

- ``random``: uniform among the candidates: the baseline, and the right start of round one.
- ``uncertainty``: the pairs whose order the model is least sure of: P(A > B) closest to
  P(B > A). For a model that classifies, a pair the model thinks is a tie (both in one class)
  scores low, since a "greater" judgement of a tie teaches nothing under ``gt``. For a ranker or
  Siamese model the least sure pairs are the closest in score, and on graded items those are often
  ties (23% of 200 asked of a ranker trained briefly on 1,200 MNIST digits, against 10% of random
  pairs): judge them with ``=`` and train with ``--relation ge``, which learns from ties where
  ``gt`` drops them.
- ``boundary``: like uncertainty, but among pairs the model puts in *adjacent* classes or
  scores (a sorting-style query: it sharpens where each class starts); for Siamese models it is
  uncertainty.
- ``clusters`` (models that name classes): the order of the model's classes, checked. Each
  question compares a sure member of one class with one of another (a member whose nearest
  neighbours in the inputs share its class: :func:`neighbour_agreement`; then the most
  confident), until more answers agree
  with the model's order than contradict it: by three for classes adjacent in the order, by two
  for classes two apart, by one for the rest (:data:`CONFIRM`), so every pair of classes is asked
  and a noisy annotator's flips are outvoted. From nothing, 3(K - 1) + 2(K - 2) + (K - 2)(K - 3)/2
  questions (71 for 10 classes), each pair once before any twice and the closest first.
  Once the order holds, the rest are ``boundary`` questions. The first questions after a
  ``--unlabeled clusters`` run (:mod:`relcomp.clusters`).
- ``auto`` (the default): ``clusters`` for models that name classes; for the others ``random``
  while fewer than :data:`RANDOM_UNTIL` comparisons are judged (the annotation-rounds study: the
  informed strategies lose to random there), then ``uncertainty``.

No item appears in more than ``max_per_item`` suggested pairs, so that N questions cover many
items rather than asking about one confusing image N times.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .clusters import cluster_support, principal_components
from .data.comparisons import load_comparisons
from .data.images import ImageSet
from .data.pairs import Pairs, pair_keys
from .data.splits import to_tensor
from .errors import ConfigError
from .metrics import item_outputs
from .run import load_run_model
from .unlabeled import nearest_neighbours
from .utils import atomic_path, make_dir, resolve_device, resolve_precision

STRATEGIES = ("auto", "clusters", "uncertainty", "boundary", "random")
RANDOM_UNTIL = 500    # auto: random before this many judged comparisons (models without classes)
REPRESENTATIVES = 50  # clusters: the surest members of each class that questions draw from
NEIGHBOURS = 20       # clusters: a member is surest when its nearest neighbours share its class
# clusters: how many more answers must agree with the model's order than contradict it, for classes
# adjacent in it, two apart, and further apart. Three, two and one outvote a 5%-noisy annotator's
# flips (few-long-noisy-quick): two and one, with one for far pairs only when never asked, named
# 2-3 groups wrongly in 2 of 3 seeds there.
CONFIRM = (3.0, 2.0, 1.0)


def auto_strategy(classifies: bool, n_judged: int) -> str:
    if classifies:
        return "clusters"
    return "random" if n_judged < RANDOM_UNTIL else "uncertainty"


def order_needs(pred: np.ndarray, judged: Pairs, k: int) -> np.ndarray:
    """(k, k) answers still needed, need[lo, hi] for lo < hi, to trust that class hi of the model
    ranks above class lo: until :data:`CONFIRM` more answers agree with the order than contradict
    it (three for classes adjacent in it, two for two apart, one for the rest), so that every pair
    of classes is asked (the model's order may be wrong anywhere) and a flipped answer is outvoted."""
    support = cluster_support(pred[judged.i], pred[judged.j], judged.z, k, judged.w)
    lo, hi = np.triu_indices(k, 1)
    confirm = np.select([hi - lo == 1, hi - lo == 2], CONFIRM[:2], CONFIRM[2])
    net = support[hi, lo] - support[lo, hi]
    need = np.zeros((k, k))
    need[lo, hi] = np.maximum(confirm - net, 0.0)
    return need


def neighbour_agreement(x: np.ndarray, pred: np.ndarray, k: int = NEIGHBOURS, seed: int = 0) -> np.ndarray:
    """Each item's share of its ``k`` nearest neighbours that the model puts in its class, the
    neighbours found in the inputs themselves (the groups' principal components; cosine
    of the centred vectors), not in anything the model learned. A model trained on groups is sure of
    the groups' mistakes too (an 8 in the group of the 5s), but the 8's neighbours are 8s."""
    flat = principal_components(x, seed)
    near = nearest_neighbours(torch.from_numpy(np.ascontiguousarray(flat)), k).numpy()
    return (pred[near] == pred[:, None]).mean(1)


def cluster_questions(probs: np.ndarray, judged: Pairs, n: int, seed: int,
                      agree: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Up to ``n`` questions (a, b, score) that check the order of the model's classes: sure
    members of two classes (those whose neighbours most ``agree`` with their class, where given,
    then the most confident), each needed pair of classes once before any twice, the closest first."""
    k = probs.shape[1]
    pred, conf = probs.argmax(1), probs.max(1)
    sure = np.lexsort((-conf, -(agree if agree is not None else np.zeros(len(pred)))))  # agreement, then confidence
    reps = [sure[pred[sure] == c][:REPRESENTATIVES] for c in range(k)]
    need = order_needs(pred, judged, k)
    times = np.zeros((k, k), dtype=np.int64)  # asked in this batch
    asked = set(pair_keys(judged.i, judged.j, len(pred)).tolist())
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        lo, hi = np.nonzero(need > 0)
        ok = [(times[a, b], b - a, a, b) for a, b in zip(lo, hi, strict=True) if len(reps[a]) and len(reps[b])]
        if not ok:
            break
        _, _, a, b = min(ok)
        pair = next_pair(reps, a, b, asked, len(pred), rng)
        if pair is None:
            need[a, b] = 0.0   # every pair of these representatives is judged
            continue
        asked.add(int(pair_keys(np.array([pair[0]]), np.array([pair[1]]), len(pred))[0]))
        out.append((pair[0], pair[1], 2.0 - len(out) / n))  # in asking order, above every boundary score (<= 1)
        need[a, b] -= 1.0
        times[a, b] += 1
    a, b, sc = (np.asarray(col) for col in zip(*out, strict=True)) if out else (np.zeros(0, np.int64),) * 3
    return a.astype(np.int64), b.astype(np.int64), sc.astype(np.float64)


def next_pair(reps: list[np.ndarray], a: int, b: int, asked: set[int], n: int,
              rng: np.random.Generator) -> tuple[int, int] | None:
    """A random unjudged pair of representatives of classes a and b (None after 100 tries), so that
    a re-asked question shows other images."""
    for _ in range(100):
        x, y = int(rng.choice(reps[a])), int(rng.choice(reps[b]))
        if int(pair_keys(np.array([x]), np.array([y]), n)[0]) not in asked:
            return x, y
    return None


def candidate_pairs(n: int, m: int, judged: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``m`` distinct unordered pairs of ``n`` items, none of them ``judged`` (keys lo * n + hi)."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, n, 2 * m + 64), rng.integers(0, n, 2 * m + 64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keys = pair_keys(a, b, n)
    keep = (lo != hi) & ~np.isin(keys, judged)
    _, first = np.unique(keys[keep], return_index=True)
    first = np.sort(first)[:m]
    return lo[keep][first], hi[keep][first]


@torch.no_grad()
def pair_scores(model, out: torch.Tensor, a: np.ndarray, b: np.ndarray, strategy: str,
                rng: np.random.Generator) -> np.ndarray:
    """How much judging each pair (a[k], b[k]) should teach, by ``strategy`` (higher: ask first)."""
    if strategy == "random":
        return rng.random(len(a))
    oa, ob = out[torch.from_numpy(a)], out[torch.from_numpy(b)]
    if model.classifies:
        pa, pb = oa.softmax(-1), ob.softmax(-1)
        cdf_b = pb.cumsum(-1)
        p_gt = (pa[:, 1:] * cdf_b[:, :-1]).sum(-1)           # P(A > B) = sum_{i>j} pA[i] pB[j]
        p_lt = (pb[:, 1:] * pa.cumsum(-1)[:, :-1]).sum(-1)    # P(B > A)
        order = 1 - (p_gt - p_lt).abs() / (p_gt + p_lt).clamp_min(1e-9)
        score = order * (p_gt + p_lt)                          # uncertain order, and not a likely tie
        if strategy == "boundary":
            gap = (oa.argmax(-1) - ob.argmax(-1)).abs()
            score = score * (gap == 1).float() + 1e-3 * score  # adjacent classes first
        return score.cpu().numpy()
    logit = model.pair_output(oa, ob)
    p = torch.sigmoid(logit if logit.ndim == 1 else logit[:, 1] - logit[:, 0])
    score = 1 - (2 * p - 1).abs()
    if strategy == "boundary" and model.scores:
        s = out[:, 0]
        rank = torch.empty_like(s).scatter_(0, s.argsort(), torch.arange(len(s), dtype=s.dtype, device=s.device))
        near = (rank[torch.from_numpy(a)] - rank[torch.from_numpy(b)]).abs() <= max(1, len(s) // 100)
        score = score * near.float() + 1e-3 * score           # neighbours in the model's order first
    return score.cpu().numpy()


def pick(a: np.ndarray, b: np.ndarray, score: np.ndarray, n: int, max_per_item: int) -> np.ndarray:
    """Indices of the ``n`` best-scored pairs with no item in more than ``max_per_item`` of them."""
    used: dict[int, int] = {}
    chosen = []
    for k in np.argsort(-score, kind="stable"):
        if used.get(a[k], 0) < max_per_item and used.get(b[k], 0) < max_per_item:
            chosen.append(k)
            used[a[k]] = used.get(a[k], 0) + 1
            used[b[k]] = used.get(b[k], 0) + 1
            if len(chosen) == n:
                break
    return np.asarray(chosen, dtype=np.int64)


def check_request(n: int, strategy: str) -> None:
    """Raises: ConfigError on a strategy that is none of :data:`STRATEGIES` or ``n`` below 1."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if n <= 0:
        raise ConfigError(f"--n must be positive, got {n}")


class Suggester:
    """A run's model and its outputs on the run's items, computed once, then asked for pairs as
    often as answers arrive: each :meth:`ask` sees the judgements given so far (``judged``), so the
    ``clusters`` strategy re-asks a pair of classes whose answers came out contradicting the order
    without a round of training in between (the page refilling its queue, a study's annotator
    answering a round in batches).

    Raises:
        ConfigError: a model that is not relational.
    """

    def __init__(self, run_dir: str | os.PathLike, device: str = "auto", seed: int = 0):
        self.seed = seed
        dev = resolve_device(device)
        self.model, self.cfg = load_run_model(run_dir, dev)
        if not self.model.relational:
            raise ConfigError(f"a {self.cfg.model} run learns from labels; suggest needs a run trained on comparisons")
        self.names, items, self.judged = self.cfg.data.train_items(self.cfg.relation)
        self.items = ImageSet(self.names, items, f"the items of {run_dir}")
        x = to_tensor(self.cfg.data.prepare(items), dev)
        _, outs = item_outputs(self.model, x, resolve_precision(self.cfg.precision, dev))
        self.outs = outs.cpu()
        self.x = x.float().cpu().numpy() if self.model.classifies else None
        self.agree: np.ndarray | None = None  # neighbour_agreement, when the clusters strategy first needs it

    def read_judged(self, comparisons: str | os.PathLike) -> Pairs:
        """Every judgement of a comparisons file on the run's items (ties too: a tie is judged)."""
        return load_comparisons(comparisons, self.items).pairs()

    def with_run_judged(self, more: Pairs) -> Pairs:
        """``more`` and the run's own judgements of pairs ``more`` does not hold (a file that grew
        from the run's comparisons counts each judgement once; another file adds to them)."""
        n = len(self.names)
        own = ~np.isin(pair_keys(self.judged.i, self.judged.j, n), pair_keys(more.i, more.j, n))

        def cat(x, y):
            return np.concatenate([np.asarray(x)[own], np.asarray(y)])

        w = None if self.judged.w is None and more.w is None else cat(
            np.ones(len(self.judged)) if self.judged.w is None else self.judged.w,
            np.ones(len(more)) if more.w is None else more.w)
        return Pairs(cat(self.judged.i, more.i), cat(self.judged.j, more.j), cat(self.judged.z, more.z), w=w)

    def strategy(self, strategy: str, judged: Pairs) -> str:
        if strategy == "clusters" and not self.model.classifies:
            raise ConfigError(f"--strategy clusters checks the order of a model's classes; a {self.cfg.model} model "
                              "names none (use auto, uncertainty, boundary or random)")
        return auto_strategy(self.model.classifies, len(judged)) if strategy == "auto" else strategy

    def ask(self, n: int, strategy: str = "auto", judged: Pairs | None = None, candidates: int | None = None,
            seed: int = 0, max_per_item: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """The ``n`` pairs (a, b, score) to judge next given ``judged`` (default: the run's own
        comparisons), best first, and the strategy that chose them."""
        check_request(n, strategy)
        judged = self.judged if judged is None else judged
        chosen = self.strategy(strategy, judged)
        if chosen == "clusters" and self.agree is None:
            self.agree = neighbour_agreement(self.x, self.outs.argmax(-1).numpy(), seed=self.seed)
        a, b, score = questions(self.model, self.outs, judged, n, chosen, candidates, seed, max_per_item, self.agree)
        return a, b, score, chosen

    def write(self, path: str | os.PathLike, a: np.ndarray, b: np.ndarray, score: np.ndarray) -> None:
        path = Path(path)
        make_dir(path.parent)
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["a", "b", "score"])
            w.writerows([self.names[a[k]], self.names[b[k]], f"{score[k]:.6f}"] for k in range(len(a)))


def suggest(run_dir: str | os.PathLike, n: int, strategy: str = "auto", candidates: int | None = None,
            out: str | os.PathLike | None = None, seed: int = 0, max_per_item: int = 2,
            device: str = "auto", judged: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write the ``n`` pairs to judge next as ``out`` (default ``<run_dir>/suggested.csv``), never a
    pair the run's comparisons or the file ``judged`` (judgements made since, or besides) holds.

    Raises:
        ConfigError: an unknown strategy, a model that is not relational (or, for ``clusters``,
            names no classes), or ``n`` larger than the pool of candidates.
    """
    check_request(n, strategy)  # before the model is loaded
    s = Suggester(run_dir, device, seed)
    more = s.with_run_judged(s.read_judged(judged)) if judged else None
    a, b, score, chosen = s.ask(n, strategy, more, candidates, seed, max_per_item)
    path = Path(out) if out else Path(run_dir) / "suggested.csv"
    s.write(path, a, b, score)
    return {"csv": str(path), "n": len(a), "strategy": chosen, "items": len(s.names),
            "order_questions": int((score > 1).sum()) if chosen == "clusters" else 0}


def questions(model, outs: torch.Tensor, judged: Pairs, n: int, strategy: str, candidates: int | None,
              seed: int, max_per_item: int, agree: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n`` pairs (a, b, score) to ask, best first: for ``clusters`` the order questions (on the
    members whose neighbours ``agree`` with their class), then ``boundary`` ones for the rest."""
    items = len(outs)
    first = (np.zeros(0, np.int64),) * 2 + (np.zeros(0),)
    if strategy == "clusters":
        first = cluster_questions(outs.float().softmax(-1).numpy(), judged, n, seed, agree)
        strategy = "boundary"
    rest = n - len(first[0])
    if rest == 0:
        return first
    keys = np.concatenate([pair_keys(judged.i, judged.j, items), pair_keys(first[0], first[1], items)])
    m = candidates if candidates is not None else max(20 * rest, 50_000)
    a, b = candidate_pairs(items, m, keys, seed)
    if rest > len(a):
        raise ConfigError(f"--n {n:,} is more than the {len(a) + len(first[0]):,} candidate pairs not judged yet; "
                          "lower --n or raise --candidates")
    score = pair_scores(model, outs, a, b, strategy, np.random.default_rng(seed))
    chosen = pick(a, b, score, rest, max_per_item)
    return (np.concatenate([first[0], a[chosen]]), np.concatenate([first[1], b[chosen]]),
            np.concatenate([first[2], score[chosen]]))
