import numpy as np
import pytest
import torch

from conftest import mnist_cfg
from relcomp.engine import train
from relcomp.errors import ConfigError, DataError
from relcomp.fewshot import draw_shots, fewshot_eval, fit_heads, names_from_shots, naming_accuracy, write_fewshot


def test_draw_shots():
    y = np.repeat(np.arange(10), 5)
    idx = draw_shots(y, 3, 10, seed=(0, 3, 1))
    assert len(idx) == 30 and np.array_equal(np.bincount(y[idx]), np.full(10, 3))
    assert np.array_equal(idx, draw_shots(y, 3, 10, seed=(0, 3, 1)))
    assert not np.array_equal(idx, draw_shots(y, 3, 10, seed=(0, 3, 2)))
    with pytest.raises(DataError, match="fewer than"):
        draw_shots(y, 6, 10, seed=0)


def test_fit_heads_separates_separable_points():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 8, generator=g) * 5
    y = torch.arange(10).repeat(3)
    x = centers[y] + 0.1 * torch.randn(30, 8, generator=g)
    w, b = fit_heads(torch.stack([x, x]), torch.stack([y, y]), 10)
    assert w.shape == (2, 8, 10)
    pred = (torch.bmm(torch.stack([x, x]), w) + b).argmax(-1)
    assert (pred == y).all()


@pytest.mark.mnist
def test_fewshot_on_a_tiny_siamese_run(mnist, data_dir, tmp_path):
    cfg = mnist_cfg(model="siamese", pairs="4000", samples=2000, train_subset=2000, val_subset=500, val_pairs=1000,
                      precision="fp32", progress=False, data_dir=str(data_dir))
    train(cfg, tmp_path / "s")
    r = fewshot_eval(tmp_path / "s", shots=[1, 3], draws=4)
    assert not (tmp_path / "s" / "fewshot.json").exists()  # computing writes nothing
    write_fewshot(tmp_path / "s", r)
    for k in ("1", "3"):
        s = r["shots"][k]
        assert s["n"] == 4 and len(s["accuracies"]) == 4
        assert s["min"] <= s["mean"] <= s["max"] and s["std"] >= 0
        assert s["mean"] > 0.15  # above chance even from a barely trained backbone
        assert np.array(s["confusion_matrix"]).sum() == 4 * 10_000
    assert (tmp_path / "s" / "fewshot.json").exists() and (tmp_path / "s" / "confusion-3shot.png").exists()
    with pytest.raises(ConfigError):
        fewshot_eval(tmp_path / "s", shots=[])


@pytest.mark.parametrize("seed", range(4))
def test_the_names_make_the_shots_most_likely_of_every_permutation(seed):
    import itertools

    rng = np.random.default_rng(seed)
    k = 5
    labels = np.repeat(np.arange(k), 2)
    logp = np.log(rng.dirichlet(np.ones(k), len(labels)))
    names = names_from_shots(logp, labels, k)
    assert sorted(names) == list(range(k))

    def loglik(n):  # class c is named n[c]: a shot labelled y is in the class named y
        inverse = np.argsort(n)
        return sum(logp[s, inverse[y]] for s, y in enumerate(labels))
    best = max(loglik(np.array(p)) for p in itertools.permutations(range(k)))
    assert loglik(names) == pytest.approx(best)


def test_an_ambiguous_shot_does_not_swap_two_names():
    """One shot per class; the 4's shot sits in the model's 9s (p 0.6): counts would tie classes 4
    and 9, the log-probabilities name both right."""
    p = np.full((10, 10), 1e-4)
    p[np.arange(10), np.arange(10)] = 1.0
    p[4, 4], p[4, 9] = 0.4, 0.6
    names = names_from_shots(np.log(p / p.sum(1, keepdims=True)), np.arange(10), 10)
    assert names.tolist() == list(range(10))


class GroupsWithoutNames(torch.nn.Module):
    """A model whose class of an item is a fixed permutation of the item's feature 0: groups found
    without any name, as a weak run on clusters and no comparison."""

    classifies = True

    def __init__(self, perm: np.ndarray):
        super().__init__()
        self.perm = torch.from_numpy(perm)
        self.unused = torch.nn.Parameter(torch.zeros(1))  # a device to read

    def embed(self, x):
        return x

    def item_output(self, e):
        return torch.nn.functional.one_hot(self.perm[e[:, 0].long()], len(self.perm)).float()


def test_one_label_per_class_names_the_groups():
    rng = np.random.default_rng(0)
    perm = rng.permutation(6)
    labels = rng.integers(0, 6, 300)
    images = np.stack([labels, np.zeros(300)], 1).astype(np.float32)  # feature 0: the label
    wrong = images.copy()
    wrong[:30, 0] = (labels[:30] + 1) % 6  # 10% of the items in the wrong group
    res = naming_accuracy(GroupsWithoutNames(perm), images, labels, images, labels, [1, 2], draws=4, num_classes=6)
    for accs, pred in res.values():  # every draw undoes the permutation exactly
        assert np.allclose(accs, 1.0) and (pred == labels[None]).all()
    res = naming_accuracy(GroupsWithoutNames(perm), wrong[30:], labels[30:], wrong, labels, [1], draws=4, num_classes=6)
    assert np.allclose(res[1][0], 0.9)  # the shots (drawn from right items) name every group; 10% stay wrong
    res = naming_accuracy(GroupsWithoutNames(perm), images, labels, images, labels, [1], draws=3, num_classes=6,
                          same_pool=True)
    assert (res[1][1] == -1).sum(1).tolist() == [6, 6, 6] and np.allclose(res[1][0], 1.0)  # its shots not scored
    not_classes = GroupsWithoutNames(perm)
    not_classes.classifies = False
    with pytest.raises(ConfigError, match="needs a model that names classes"):
        naming_accuracy(not_classes, images, labels, images, labels, [1])
