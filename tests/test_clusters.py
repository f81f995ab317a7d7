"""Groups of the images nobody compared and their names (:mod:`relcomp.clusters`): the order of
the groups checked against every permutation, the evidence against its definition, groups that
form on their own and are cached, and the ``clusters`` objective's record in a real run."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from relcomp.clusters import (
    EXACT_MAX,
    agreement,
    cache_path,
    cached_clusters,
    cluster_support,
    find_clusters,
    local_order,
    name_clusters,
)
from relcomp.metrics import cluster_accuracy


def brute_force_best(support: np.ndarray) -> float:
    k = len(support)
    return max(sum(support[order[hi], order[lo]] for lo in range(k) for hi in range(lo + 1, k))
               for order in itertools.permutations(range(k)))


def score(rank: np.ndarray, support: np.ndarray) -> float:
    return float(support[rank[:, None] > rank[None, :]].sum())


@pytest.mark.parametrize("seed", range(5))
def test_the_order_of_the_groups_is_the_best_of_every_permutation(seed):
    rng = np.random.default_rng(seed)
    support = rng.integers(0, 4, (6, 6)).astype(float)
    np.fill_diagonal(support, 0)
    rank = name_clusters(support)
    assert sorted(rank) == list(range(6))
    assert score(rank, support) == pytest.approx(brute_force_best(support))
    # the heuristic beyond EXACT_MAX finds a permutation, never better than the exact one
    heuristic = local_order(support)
    assert sorted(heuristic) == list(range(6)) and score(heuristic, support) <= score(rank, support)


def test_a_consistent_order_is_recovered_exactly_and_noise_is_outvoted():
    rng = np.random.default_rng(0)
    true_rank = rng.permutation(10)             # group c holds the digit true_rank[c]
    ca, cb = rng.integers(0, 10, 300), rng.integers(0, 10, 300)
    keep = true_rank[ca] != true_rank[cb]
    ca, cb = ca[keep], cb[keep]
    z = (true_rank[ca] > true_rank[cb]).astype(np.uint8)
    flip = rng.random(len(z)) < 0.1
    z[flip] = 1 - z[flip]
    support = cluster_support(ca, cb, z, 10)
    rank = name_clusters(support)
    assert (rank == true_rank).all()
    assert 0.8 < agreement(rank, support) < 0.95
    # 13 groups (3 without evidence): the heuristic keeps the order of the 10
    big = name_clusters(np.pad(support, ((0, EXACT_MAX - 9), (0, EXACT_MAX - 9))))
    assert (np.argsort(big[:10]) == np.argsort(true_rank)).all()


def test_support_matches_its_definition():
    ca, cb = np.array([0, 0, 1, 2, 2]), np.array([1, 1, 2, 0, 2])
    z = np.array([1, 0, 1, 2, 1])
    w = np.array([1.0, 2.0, 0.5, 1.0, 1.0])
    s = cluster_support(ca, cb, z, 3, w)
    expected = np.zeros((3, 3))
    expected[0, 1] += 1.0   # A in 0 beat B in 1
    expected[1, 0] += 2.0   # A in 0 lost to B in 1
    expected[1, 2] += 0.5
    # the tie (z = 2) and the comparison within group 2 order nothing
    assert np.array_equal(s, expected)
    assert agreement(np.arange(3), np.zeros((3, 3))) == 1.0


def blobs(n: int = 400, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, 16))
    labels = rng.integers(0, k, n)
    return (centres[labels] + rng.normal(0, 1, (n, 16))).astype(np.float32), labels


def test_groups_form_on_their_own_and_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("RELCOMP_DATA_DIR", str(tmp_path))
    x, labels = blobs()
    found = cached_clusters(x, 4, seed=0)
    assert cluster_accuracy(found.labels, labels, 4) > 0.98
    assert found.confidence.min() >= 0 and found.confidence.max() <= 1 and sum(found.sizes()) == len(x)
    assert cache_path(x, 4, 0).exists() and cache_path(x, 4, 0).parent == tmp_path / "clusters"
    again = cached_clusters(x, 4, seed=0)     # read back, not recomputed
    assert np.array_equal(again.labels, found.labels)
    assert cache_path(x, 4, 1) != cache_path(x, 4, 0) != cache_path(x[:-1], 4, 0)


def test_the_same_seed_gives_the_same_groups():
    x, _ = blobs(200, 3, seed=1)
    a, b = find_clusters(x, 3, seed=5), find_clusters(x, 3, seed=5)
    assert np.array_equal(a.labels, b.labels) and np.allclose(a.confidence, b.confidence)


def test_the_cluster_questions_check_the_order_and_re_ask_a_contradiction():
    from relcomp.data.pairs import Pairs
    from relcomp.suggest import cluster_questions, order_needs

    rng = np.random.default_rng(0)
    pred = np.repeat(np.arange(4), 30)
    probs = np.full((120, 4), 0.02)
    probs[np.arange(120), pred] = 0.94 - rng.random(120) * 0.1
    none = Pairs(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.uint8))
    need = order_needs(pred, none, 4)
    assert need[0, 1] == need[1, 2] == need[2, 3] == 3 and need[0, 2] == need[1, 3] == 2 and need[0, 3] == 1
    a, b, score = cluster_questions(probs, none, 50, seed=0)
    assert len(a) == 14 and (score > 1).all() and (np.diff(score) < 0).all()
    classes = [(min(x, y), max(x, y)) for x, y in zip(pred[a], pred[b], strict=True)]
    assert classes == [(0, 1), (1, 2), (2, 3), (0, 2), (1, 3), (0, 3),   # every pair once, the closest first,
                       (0, 1), (1, 2), (2, 3), (0, 2), (1, 3),           # then those that need more
                       (0, 1), (1, 2), (2, 3)]
    assert len({(x, y) for x, y in zip(a, b, strict=True)}) == 14   # other images when re-asked
    # an answer that puts class 0 above class 3 contradicts the order: that pair needs two more,
    # and an adjacent pair that three answers confirm needs none
    i = np.array([0, 30, 31, 32], np.int32)     # class 0, class 1 (three times)
    j = np.array([90, 0, 1, 2], np.int32)       # class 3, class 0 (three times)
    judged = Pairs(i, j, np.array([1, 1, 1, 1], np.uint8))
    need = order_needs(pred, judged, 4)
    assert need[0, 3] == 2 and need[0, 1] == 0
    a, b, _ = cluster_questions(probs, judged, 50, seed=0)
    asked = {(min(x, y), max(x, y)) for x, y in zip(pred[a], pred[b], strict=True)}
    assert (0, 3) in asked and (0, 1) not in asked


def test_neighbour_agreement_against_brute_force():
    """Each item's share of its k nearest other items (cosine of the centred vectors) in its class."""
    from relcomp.suggest import neighbour_agreement

    rng = np.random.default_rng(3)
    x, pred = rng.normal(size=(40, 2, 3)), rng.integers(0, 3, 40)
    got = neighbour_agreement(x, pred, k=5)
    flat = x.reshape(40, -1)
    z = flat - flat.mean(0)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    want = []
    for i in range(40):
        sims = [(z[i] @ z[j], j) for j in range(40) if j != i]
        near = [j for _, j in sorted(sims, reverse=True)[:5]]
        want.append(np.mean([pred[j] == pred[i] for j in near]))
    assert np.allclose(got, want)


def test_the_order_questions_go_to_members_whose_neighbours_agree():
    """A member the model is surest of, but whose neighbours sit in another class (an 8 in the
    group of the 5s), is not asked about while members its neighbours confirm exist."""
    from relcomp.data.pairs import Pairs
    from relcomp.suggest import cluster_questions

    rng = np.random.default_rng(0)
    pred = np.repeat(np.arange(3), 60)
    probs = np.full((180, 3), 0.02)
    probs[np.arange(180), pred] = 0.9 - rng.random(180) * 0.1
    probs[[0, 60, 120], pred[[0, 60, 120]]] = 0.999     # the most confident of each class ...
    agree = np.ones(180)
    agree[[0, 60, 120]] = 0.2                            # ... has neighbours of another class
    none = Pairs(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.uint8))
    a, b, _ = cluster_questions(probs, none, 200, seed=0, agree=agree)
    asked = set(a) | set(b)
    assert len(a) > 0 and not asked & {0, 60, 120}
