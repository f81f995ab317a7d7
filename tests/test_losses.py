import pytest
import torch

from relcomp.errors import ConfigError
from relcomp.losses import get_loss, log_prob_first_greater, log_prob_relations, prob_first_greater, relation_loss
from relcomp.models import build_model

WEAK = build_model("weak")


def weak_relation_loss(la, lb, z, name="unconditional", weight=None):
    """The weak model's loss as the engine computes it: a loss of the registry on its pair output."""
    return get_loss(name)(WEAK.pair_output(la, lb), z, weight)


def brute_force(p_a, p_b):
    """The paper's formula: outer product, lower-triangular mask (i > j), sum; one pair at a time."""
    out = []
    for a, b in zip(p_a, p_b):
        k = len(a)
        out.append(sum(a[i] * b[j] for i in range(k) for j in range(k) if i > j))
    return torch.stack(out)


@pytest.mark.parametrize("k", range(2, 11))
def test_prob_first_greater_matches_brute_force(k):
    g = torch.Generator().manual_seed(k)
    p_a = torch.softmax(torch.randn(16, k, generator=g, dtype=torch.float64) * 3, -1)
    p_b = torch.softmax(torch.randn(16, k, generator=g, dtype=torch.float64) * 3, -1)
    assert torch.allclose(prob_first_greater(p_a, p_b), brute_force(p_a, p_b), atol=1e-12)
    mask = torch.tril(torch.ones(k, k, dtype=torch.float64), -1)  # the paper's vectorised form
    vec = (p_a[:, :, None] * p_b[:, None, :] * mask).sum((1, 2))
    assert torch.allclose(prob_first_greater(p_a, p_b), vec, atol=1e-12)
    lp_gt, lp_le = log_prob_first_greater(p_a.log(), p_b.log())
    assert torch.allclose(lp_gt.exp(), vec, atol=1e-10)
    assert torch.allclose(lp_gt.exp() + lp_le.exp(), torch.ones(16, dtype=torch.float64), atol=1e-10)


def test_one_hot_cases():
    e = torch.eye(4)
    assert prob_first_greater(e[[3]], e[[1]]).item() == 1.0
    assert prob_first_greater(e[[1]], e[[3]]).item() == 0.0
    assert prob_first_greater(e[[2]], e[[2]]).item() == 0.0


def test_extreme_logits_give_finite_loss_and_gradients():
    la = torch.tensor([[80.0, -80, -80], [-80, -80, 80], [0.0, 0, 0]], requires_grad=True)
    lb = torch.tensor([[-80.0, -80, 80], [80.0, -80, -80], [0.0, 0, 0]], requires_grad=True)
    z = torch.tensor([1.0, 0.0, 1.0])  # the first two are confidently wrong
    loss = weak_relation_loss(la, lb, z)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 50
    assert torch.isfinite(la.grad).all() and torch.isfinite(lb.grad).all()
    assert la.grad.abs().sum() > 0


def test_unconditional_loss_is_bce_of_probability():
    g = torch.Generator().manual_seed(0)
    la, lb = torch.randn(32, 10, generator=g), torch.randn(32, 10, generator=g)
    z = (torch.rand(32, generator=g) > 0.5).float()
    p = prob_first_greater(la.softmax(-1), lb.softmax(-1))
    expected = torch.nn.functional.binary_cross_entropy(p, z)
    assert torch.allclose(weak_relation_loss(la, lb, z), expected, atol=1e-5)


def test_paper_code_loss_is_a_double_sigmoid():
    g = torch.Generator().manual_seed(1)
    la, lb = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    z = torch.ones(8)
    p = prob_first_greater(la.softmax(-1), lb.softmax(-1))
    # BCE with logits on a probability: the implied prediction sigmoid(p) never exceeds sigmoid(1)
    expected = -torch.log(torch.sigmoid(p)).mean()
    assert torch.allclose(weak_relation_loss(la, lb, z, "paper-code"), expected, atol=1e-6)
    assert weak_relation_loss(la, lb, z, "paper-code") > -torch.log(torch.sigmoid(torch.tensor(1.0)))
    with pytest.raises(ConfigError):
        get_loss("other")


def test_siamese_loss():
    logit, z = torch.tensor([10.0, -10.0]), torch.tensor([1.0, 0.0])
    assert relation_loss(logit, z) < 1e-4


def test_supervised_loss_is_cross_entropy():
    g = torch.Generator().manual_seed(2)
    logits, y = torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g)
    assert torch.allclose(relation_loss(logits, y), torch.nn.functional.cross_entropy(logits, y), atol=1e-6)


def brute_force_three(p_a, p_b):
    """P(A < B), P(A > B), P(A = B) by the outer product, one pair at a time."""
    k = p_a.shape[1]
    joint = p_a[:, :, None] * p_b[:, None, :]  # joint[n, i, j] = p_A[i] p_B[j]
    i, j = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    return [(joint * m).sum((1, 2)) for m in ((i < j).double(), (i > j).double(), (i == j).double())]


def test_conditional_and_symmetric_losses_match_their_formulas():
    g = torch.Generator().manual_seed(3)
    la, lb = torch.randn(32, 10, generator=g, dtype=torch.float64) * 2, torch.randn(32, 10, generator=g, dtype=torch.float64) * 2
    z = (torch.rand(32, generator=g) > 0.5).double()
    p_lt, p_gt, p_eq = brute_force_three(la.softmax(-1), lb.softmax(-1))
    assert torch.allclose(p_lt + p_gt + p_eq, torch.ones(32, dtype=torch.float64))
    cond = get_loss("conditional")
    # the conditional loss reads the weak model's output as the logit of P(A > B | not a tie); its value the BCE of it
    assert torch.allclose(cond.logits(WEAK.pair_output(la, lb)).double(), (p_gt / p_lt).log(), atol=1e-5)
    expected = -(z * (p_gt / (p_gt + p_lt)).log() + (1 - z) * (p_lt / (p_gt + p_lt)).log()).mean()
    assert torch.allclose(cond(WEAK.pair_output(la, lb), z).double(), expected, atol=1e-5)
    # symmetric: the tie mass is a failure on both sides
    expected = -(z * p_gt.log() + (1 - z) * p_lt.log()).mean()
    out = log_prob_relations(la.log_softmax(-1), lb.log_softmax(-1))
    assert torch.allclose(get_loss("symmetric")(out, z).double(), expected, atol=1e-5)
    # with annotator noise e the two orders swap with probability e; the tie mass stays a failure
    e = torch.rand(32, generator=g, dtype=torch.float64) * 0.5
    obs_gt, obs_lt = (1 - e) * p_gt + e * p_lt, (1 - e) * p_lt + e * p_gt
    expected = -(z * obs_gt.log() + (1 - z) * obs_lt.log()).mean()
    assert torch.allclose(get_loss("symmetric")(out, z, noise=e.float()).double(), expected, atol=1e-5)
    # unconditional counts the tie mass as "not greater": the three differ exactly there
    expected = -(z * p_gt.log() + (1 - z) * (p_lt + p_eq).log()).mean()
    assert torch.allclose(weak_relation_loss(la.float(), lb.float(), z.float()).double(), expected, atol=1e-4)


def test_symmetric_weak_model_trains_on_three_outcomes_and_evaluates_on_one_logit():
    torch.manual_seed(0)
    model = build_model("weak").eval()
    xa, xb = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    out = model(xa, xb)
    assert out.shape == (4, 3) and torch.allclose(out.exp().sum(-1), torch.ones(4), atol=1e-5)
    la, lb = model.classify(xa), model.classify(xb)
    assert torch.allclose(get_loss("symmetric").logits(model.pair_output(la, lb)), out[:, 1] - out[:, 0], atol=1e-5)


@pytest.mark.parametrize("model,loss", [("siamese", "conditional"), ("ranker", "symmetric"), ("supervised", "paper-code")])
def test_weak_only_losses_are_refused_elsewhere(model, loss):
    from relcomp.config import TrainConfig

    with pytest.raises(ConfigError, match="does not apply"):
        TrainConfig(model=model, loss=loss).validate()


def brute_force_loss(name, p_lt, p_gt, p_eq, z):
    """Each registered loss from its formula, pair by pair, on the three relation probabilities."""
    rows = []
    for lt, gt, eq, zk in zip(p_lt, p_gt, p_eq, z):
        if name == "unconditional":
            p = gt / (gt + lt + eq)
            rows.append(-(zk * p.log() + (1 - zk) * (1 - p).log()))
        elif name == "conditional":
            p = gt / (gt + lt)
            rows.append(-(zk * p.log() + (1 - zk) * (1 - p).log()))
        elif name == "symmetric":
            rows.append(-(zk * gt.log() + (1 - zk) * lt.log()))
        elif name == "paper-code":
            q = torch.sigmoid(gt / (gt + lt + eq))  # BCEWithLogits of the probability: a second sigmoid
            rows.append(-(zk * q.log() + (1 - zk) * (1 - q).log()))
    return torch.stack(rows).mean()


@pytest.mark.parametrize("name", ["unconditional", "conditional", "symmetric", "paper-code"])
def test_every_registered_loss_matches_its_brute_force_formula(name):
    from relcomp.losses import LOSSES

    assert sorted(LOSSES) == sorted(["unconditional", "conditional", "symmetric", "paper-code"])  # one test each
    g = torch.Generator().manual_seed(4)
    la, lb = torch.randn(16, 10, generator=g, dtype=torch.float64), torch.randn(16, 10, generator=g, dtype=torch.float64)
    z = (torch.rand(16, generator=g) > 0.5).double()
    p_lt, p_gt, p_eq = brute_force_three(la.softmax(-1), lb.softmax(-1))
    got = get_loss(name)(WEAK.pair_output(la.float(), lb.float()), z.float())
    assert torch.allclose(got.double(), brute_force_loss(name, p_lt, p_gt, p_eq, z), atol=1e-5)


def test_config_validates_losses_and_reads_the_old_name():
    from relcomp.config import TrainConfig

    TrainConfig(model="weak", loss="conditional", annotator_model="none").validate()
    for bad in (dict(model="weak", loss="symmetric", relation="ge"), dict(model="siamese", loss="conditional"),
                dict(model="weak", loss="paper-code", noise_correction="estimate")):
        with pytest.raises(ConfigError):
            TrainConfig(**bad).validate()
    from relcomp.run import upgrade

    old = TrainConfig(model="weak").to_dict() | {"loss": "correct"}  # the loss's first name, in an old run folder
    assert TrainConfig.from_dict(upgrade(old)).loss == "unconditional"


def test_the_weak_default_is_what_the_loss_study_chose_on_val():
    import json
    from pathlib import Path

    from relcomp.config import TrainConfig, loss_name
    from relcomp.models import MODELS

    study = json.loads((Path(__file__).parents[1] / "docs" / "results" / "loss-quick.json").read_text())
    chosen = max(study["cells"], key=lambda k: study["cells"][k]["val_cls_acc"]["mean"])
    assert chosen == study["chosen_on_val"] == MODELS["weak"].losses[0] == loss_name(TrainConfig(model="weak"))
    assert loss_name(TrainConfig(model="weak", relation="ge")) == loss_name(TrainConfig(model="siamese")) == "unconditional"


def test_pairs_are_read_on_the_relation_for_every_model():
    """Training the supervised model is the cross-entropy of labels; scoring it on test pairs reads its
    pair output on gt (P(A > B) against P(A <= B), as before losses were objects), also for K = 3."""
    from relcomp.config import TrainConfig, resolve

    run = resolve(TrainConfig(model="supervised", num_classes=3))
    train_loss, reader = run.loss, run.pair_loss
    assert train_loss.relation is None and reader.relation == "gt"
    g = torch.Generator().manual_seed(5)
    la, lb = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    model = build_model("supervised", 3)
    lp_gt, lp_le = log_prob_first_greater(la.log_softmax(-1), lb.log_softmax(-1))
    assert torch.allclose(reader.logits(model.pair_output(la, lb)), lp_gt - lp_le, atol=1e-5)
    assert torch.equal(train_loss.logits(la), la)  # three class logits stay three class logits
