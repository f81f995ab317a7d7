import numpy as np

from relcomp.analysis import pc1_ordering, stratified_subsample, tsne_2d


def _ordinal_embeddings(order, n_per=50, dim=16, seed=0):
    """Points of class c placed at position order.index(c) along a random direction, plus noise."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    labels = np.repeat(np.arange(10), n_per)
    pos = np.array([order.index(c) for c in labels], float)
    emb = pos[:, None] * direction[None] * 3 + rng.normal(scale=0.3, size=(len(labels), dim))
    return emb, labels


def test_known_order_is_recovered_with_positive_rho():
    emb, y = _ordinal_embeddings(list(range(10)))
    o = pc1_ordering(emb, y)
    assert o["ordering"] == "0→1→2→3→4→5→6→7→8→9"
    assert o["rho"] > 0.95
    assert np.corrcoef(o["projection"], y)[0, 1] > 0  # oriented


def test_reversed_embedding_gives_the_same_answer():
    emb, y = _ordinal_embeddings(list(range(10)))
    a, b = pc1_ordering(emb, y), pc1_ordering(-emb, y)
    assert a["ordering"] == b["ordering"] and abs(a["rho"] - b["rho"]) < 1e-12
    assert np.sign(a["rho_raw"]) != np.sign(b["rho_raw"])  # the raw PCA sign is arbitrary; |rho| is not


def test_scrambled_order_is_reported():
    order = [2, 7, 3, 1, 9, 8, 4, 0, 5, 6]  # the paper's supervised ordering
    emb, y = _ordinal_embeddings(order)
    o = pc1_ordering(emb, y)
    assert o["ordering"] in ("→".join(map(str, order)), "→".join(map(str, order[::-1])))
    assert o["rho"] < 0.5


def test_subsample_and_tsne():
    emb, y = _ordinal_embeddings(list(range(10)), n_per=20)
    idx = stratified_subsample(y, 100, seed=0)
    assert len(idx) == 100 and len(np.unique(idx)) == 100
    xy = tsne_2d(emb[idx])
    assert xy.shape == (100, 2) and np.isfinite(xy).all()
