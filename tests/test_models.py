import pytest
import torch

from relcomp.errors import ConfigError
from relcomp.models import BaseModel, build_model


def test_base_model_is_the_papers():
    m = BaseModel()
    kinds = [type(x).__name__ for x in list(m.features) + list(m.fc)]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "Flatten",
                     "Linear", "ReLU", "Dropout", "Linear"]
    assert m.fc[0].in_features == 3136 and m.fc[-1].out_features == 128
    assert m(torch.rand(3, 1, 28, 28)).shape == (3, 128)


@pytest.mark.parametrize("kind", ["supervised", "siamese", "weak"])
def test_shapes_and_gradients(kind):
    torch.manual_seed(0)
    m = build_model(kind)
    xa, xb = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)
    if kind == "supervised":
        out = m(xa)
        assert out.shape == (4, 10)
        loss = out.logsumexp(1).mean()
    elif kind == "siamese":
        out = m(xa, xb)
        assert out.shape == (4,)
        loss = out.mean()
    else:
        la, lb = m(xa, xb)
        assert la.shape == lb.shape == (4, 10)
        loss = m.pair_logit(la, lb).mean()
    loss.backward()
    for name, p in m.named_parameters():
        if kind == "siamese" or "head" in name or "backbone" in name:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the item/pair protocol agrees with the direct forward in eval mode
    m.eval()
    with torch.no_grad():
        oa, ob = m.item_output(m.embed(xa)), m.item_output(m.embed(xb))
        pl = m.pair_logit(oa, ob)
        assert pl.shape == (4,)
        if kind == "siamese":
            assert torch.allclose(pl, m(xa, xb), atol=1e-5)
        else:  # a classifier's P(A > B) and P(B > A) cannot both exceed one half
            assert not torch.any((m.pair_logit(oa, ob) > 0) & (m.pair_logit(ob, oa) > 0))


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
