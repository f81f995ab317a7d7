import pytest
import torch

from relcomp.errors import ConfigError
from relcomp.losses import get_loss
from relcomp.models import MODELS, BaseModel, build_model


def test_base_model_is_the_papers():
    m = BaseModel()
    kinds = [type(x).__name__ for x in list(m.features) + list(m.fc)]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "Flatten",
                     "Linear", "ReLU", "Dropout", "Linear"]
    assert m.fc[0].in_features == 3136 and m.fc[-1].out_features == 128
    assert m(torch.rand(3, 1, 28, 28)).shape == (3, 128)


@pytest.mark.parametrize("kind,loss", [(k, loss) for k, c in MODELS.items() for loss in c.losses])
def test_one_contract_shapes_and_gradients(kind, loss):
    """forward gives what the loop needs, whatever the loss: class logits (supervised), the pair
    output (a logit, or the weak model's three log-probabilities [A < B, A > B, tie]); every loss
    the model takes trains it; the item/pair protocol (what evaluation reads) computes the same
    output in eval mode."""
    torch.manual_seed(0)
    m = build_model(kind)
    xa, xb = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    out = m(xa, xb) if m.relational else m(xa)
    three = m.relational and m.classifies
    assert out.shape == ((4, 3) if three else (4,) if m.relational else (4, 10))
    if three:  # log-probabilities of three outcomes that cover every case
        assert torch.allclose(out.exp().sum(-1), torch.ones(4), atol=1e-5)
    lf = get_loss(loss, "gt" if m.relational else None)
    lf(out, torch.ones(4) if m.relational else torch.zeros(4, dtype=torch.long)).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    m.eval()
    with torch.no_grad():
        oa, ob = m.item_output(m.embed(xa)), m.item_output(m.embed(xb))
        if m.relational:
            assert torch.allclose(m.pair_output(oa, ob), m(xa, xb), atol=1e-5)
        else:
            assert torch.allclose(oa, m(xa), atol=1e-5)
        if m.classifies and m.relational:  # a classifier's P(A > B) and P(B > A) cannot both exceed one half
            assert not torch.any((lf.logits(m.pair_output(oa, ob)) > 0) & (lf.logits(m.pair_output(ob, oa)) > 0))


def test_capabilities_are_declared_by_the_classes():
    caps = {k: (c.relational, c.classifies, c.scores, c.selection_metric, c.fewshot_method, c.export.method)
            for k, c in MODELS.items()}
    assert caps == {"supervised": (False, True, False, "val_cls_acc", "linear", "classify"),
                    "siamese": (True, False, False, "val_rel_acc", "linear", "forward"),
                    "weak": (True, True, False, "val_rel_acc", "linear", "classify"),
                    "ranker": (True, False, True, "val_rel_acc", "cutpoints", "score")}


def test_batched_backbone_equals_two_calls():
    torch.manual_seed(0)
    m = build_model("siamese").eval()
    xa, xb = torch.rand(5, 1, 28, 28), torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        two = m.head(torch.cat([m.backbone(xa), m.backbone(xb)], 1)).squeeze(1)
        assert torch.allclose(m(xa, xb), two, atol=1e-5)


def test_unknown_model():
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("resnet")


@pytest.mark.parametrize("kind,relation", [(k, rel) for k, c in MODELS.items() if c.relational
                                           for rel in ("gt", "ge", "same")])
def test_pair_output_grid_is_pair_output_on_every_pair(kind, relation):
    """Brute force: the grid (the weak model's matrix products) equals pair_output pair by pair."""
    torch.manual_seed(0)
    m = build_model(kind, relation=relation).eval()
    with torch.no_grad():
        oa, ob = (m.item_output(m.embed(torch.rand(n, 1, 28, 28))) for n in (5, 3))
        grid = m.pair_output_grid(oa * 3, ob * 3)  # sharper distributions than an untrained model's
        for a in range(5):
            for b in range(3):
                assert torch.allclose(grid[a, b], m.pair_output(oa[a:a + 1] * 3, ob[b:b + 1] * 3)[0], atol=1e-4)


def test_item_outputs_feed_images_in_the_weights_memory_format():
    from relcomp.metrics import channels_last, item_outputs

    torch.manual_seed(0)
    model = build_model("weak")
    x = torch.randn(300, 1, 28, 28)
    assert not channels_last(model)
    nchw = item_outputs(model, x, batch=128)
    model = model.to(memory_format=torch.channels_last)
    assert channels_last(model)
    nhwc = item_outputs(model, x, batch=128)
    for a, b in zip(nchw, nhwc, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
