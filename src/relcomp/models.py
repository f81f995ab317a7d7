"""The paper's models: one shared ``BaseModel`` backbone with different heads, and one contract.

Every model exposes the same three steps, which let one evaluator serve them all:
``embed(x)`` (the 128-d backbone output), ``item_output(e)`` (what one image contributes: class
logits, the embedding itself for the Siamese head, a scalar score for the ranker) and
``pair_output(oa, ob)`` (the pair output for the model's relation: a logit for ``gt`` and
``same`` (P(A > B), P(same class)), or three outputs over [A < B, A > B, tie]; the weak model always
gives its three log-probabilities).

``forward`` returns what the training loop needs and nothing else: a relational model's
``forward(xa, xb)`` is its pair output, the supervised model's ``forward(x)`` its class logits. A
loss object (:mod:`relcomp.losses`) scores that output and says what it means; the model knows
nothing of the loss, and the loop never asks which model it trains.

What a model can do is said by its class attributes (``relational``, ``classifies``, ``scores``,
``export`` ...), never by testing its name elsewhere. Adding a model is one class here plus one line
in :data:`MODELS` (see docs/architecture.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .backbones import MLPBackbone
from .data.pairs import RELATIONS
from .errors import ConfigError
from .losses import log_prob_relations

EMBED_DIM = 128


class BaseModel(nn.Module):
    """Conv(1,32)-ReLU-Pool-Conv(32,64)-ReLU-Pool-Conv(64,64)-ReLU-FC(3136,64)-ReLU-Dropout-FC(64,128).

    Exactly the paper's backbone; input (B, C, 28, 28) floats in [0, 1].
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, embed_dim: int = EMBED_DIM, dropout: float = 0.2):
        super().__init__()
        side = image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(64 * side * side, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@dataclass(frozen=True)
class ExportSpec:
    """What an exported model computes: the method traced, its input and output names."""

    method: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class RelcompModel(nn.Module):
    """The capabilities every model declares (class attributes) and the shared steps."""

    relational: ClassVar[bool] = True          # trained on pairs; forward(xa, xb) is the pair output
    classifies: ClassVar[bool] = False         # item_output is class logits (argmax = the class)
    scores: ClassVar[bool] = False             # item_output is one score per image (higher = greater)
    selection_metric: ClassVar[str] = "val_rel_acc"   # the val metric that picks the best checkpoint
    fewshot_method: ClassVar[str] = "linear"   # default of `relcomp fewshot --method`
    batch_size: ClassVar[int] = 128            # default batch (the paper's)
    default_epochs: ClassVar[float | None] = None     # default budget: epochs over the train set ...
    default_samples: ClassVar[int | None] = 150_000   # ... or samples seen
    export: ClassVar[ExportSpec] = ExportSpec("forward", ("a", "b"), ("logit",))
    summary: ClassVar[str] = ""                # one line for `relcomp train --help`
    losses: ClassVar[tuple[str, ...]] = ("unconditional",)  # the --loss names it takes; the first is its default
    relation: str = "gt"

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def pair_forward(self, xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        """The pair output, both images through the backbone in one batched call (half the kernel
        launches of two calls, the same result)."""
        oa, ob = self.item_output(self.embed(torch.cat([xa, xb]))).chunk(2)
        return self.pair_output(oa, ob)

    def forward(self, xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        return self.pair_forward(xa, xb)

    def pair_output_grid(self, out_a: torch.Tensor, out_b: torch.Tensor) -> torch.Tensor:
        """The pair output of every (a, b) of two sets of item outputs, shape (len(a), len(b), ...):
        :meth:`pair_output` on each pair (a model may compute it faster, to the same values)."""
        n, r = len(out_a), len(out_b)
        out = self.pair_output(out_a.repeat_interleave(r, 0), out_b.repeat(n, *[1] * (out_b.ndim - 1)))
        return out.view(n, r, *out.shape[1:])


class _Classifier(RelcompModel):
    """``BaseModel`` + Linear(128, K). Shared by the supervised and the weak model."""

    classifies = True
    export = ExportSpec("classify", ("x",), ("logits",))

    def __init__(self, num_classes: int = 10, relation: str = "gt", dropout: float = 0.2,
                 backbone: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone if backbone is not None else BaseModel(dropout=dropout)
        self.head = nn.Linear(EMBED_DIM, num_classes)
        self.relation = relation

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, K)."""
        return self.head(self.backbone(x))

    def item_output(self, e: torch.Tensor) -> torch.Tensor:
        """Per-image output from an embedding: the class logits."""
        return self.head(e)

    def pair_output(self, la: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
        """The pair output from two images' class logits, for every relation: the exact
        log-probabilities log [P(A < B), P(A > B), P(A = B)] (B, 3), P(A > B) = sum_{i>j} p_A[i] p_B[j]
        (what they mean as outcome logits is the loss's business: :meth:`relcomp.losses.Loss.logits`)."""
        return log_prob_relations(la.float().log_softmax(-1), lb.float().log_softmax(-1))

    def pair_output_grid(self, la: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
        """:meth:`pair_output` of every (a, b) at once: the three relation probabilities are
        p_A^T M p_B for a 0/1 matrix M (float64 matrix products), K^2 work per pair instead of log-space sums."""
        pa, pb = la.double().softmax(-1), lb.double().softmax(-1)
        below = torch.ones(pa.shape[1], pa.shape[1], dtype=pa.dtype, device=pa.device).tril(-1)  # [i, j] = j < i
        probs = torch.stack([pa @ below.T @ pb.T, pa @ below @ pb.T, pa @ pb.T], -1)
        return probs.clamp_min(1e-300).log().float()


class SupervisedModel(_Classifier):
    """The baseline: class logits trained with cross-entropy on labels. ``forward(x)`` -> (B, K)."""

    summary = "labels, cross-entropy (the baseline)"
    relational = False
    selection_metric = "val_cls_acc"
    batch_size = 64
    default_epochs, default_samples = 5, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(x)


class WeakModel(_Classifier):
    """Trained on pairs only: P(A > B) = sum_{i>j} p_A[i] p_B[j] from the two softmax outputs.

    ``forward(xa, xb)`` returns the pair output: the three log-probabilities [A < B, A > B, tie], in
    log space. Classification is the argmax of the class logits, learned with zero labels.
    """

    summary = "pairs only; a K-way classifier whose P(A > B) = sum_{i>j} pA[i] pB[j] is trained"
    # symmetric first, the default: chosen on val by the loss study (`reproduce --profile loss-quick`)
    losses = ("symmetric", "unconditional", "conditional", "paper-code")


class SiameseModel(RelcompModel):
    """Shared ``BaseModel`` for both images; concat(256) -> Linear(256,64)-ReLU-Dropout-Linear(64,1).

    ``forward(xa, xb)`` returns the logit of P(A > B), shape (B,).
    """

    summary = "pairs; a head on both embeddings predicts A > B"

    def __init__(self, num_classes: int = 10, relation: str = "gt", dropout: float = 0.2,
                 backbone: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone if backbone is not None else BaseModel(dropout=dropout)
        self.relation = relation
        n_out = 3 if relation == "ge" else 1  # ge: logits over [A < B, A > B, tie]
        self.head = nn.Sequential(nn.Linear(2 * EMBED_DIM, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, n_out))

    def item_output(self, e: torch.Tensor) -> torch.Tensor:
        return e

    def pair_output(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        if self.relation == "same":
            # A symmetric question gets symmetric features: on concat(ea, eb) the head did not
            # learn at all in 60k pairs (loss stayed at log 2); |ea - eb| and ea * eb it learns at once.
            return self.head(torch.cat([(ea - eb).abs(), ea * eb], dim=1)).squeeze(1)
        out = self.head(torch.cat([ea, eb], dim=1))
        return out if self.relation == "ge" else out.squeeze(1)


class RankerModel(RelcompModel):
    """``BaseModel`` + Linear(128, 1): one scalar score s per image (Bradley-Terry / RankNet).

    gt: P(A > B) = sigmoid(s(A) - s(B)). ge: an ordered-logit tie band of learned half-width
    theta: P(A > B) = sigmoid(d - theta), P(A < B) = sigmoid(-d - theta), the rest is a tie
    (Rao-Kupper). same: P(same) = sigmoid(theta - d^2). ``forward(xa, xb)`` gives the pair output.
    """

    summary = "pairs; one score s per image, P(A > B) = sigmoid(s(A) - s(B))"
    scores = True
    fewshot_method = "cutpoints"
    export = ExportSpec("score", ("x",), ("score",))

    def __init__(self, num_classes: int = 10, relation: str = "gt", dropout: float = 0.2,
                 backbone: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone if backbone is not None else BaseModel(dropout=dropout)
        self.head = nn.Linear(EMBED_DIM, 1)
        self.relation = relation
        self.theta = nn.Parameter(torch.zeros(())) if relation != "gt" else None

    def item_output(self, e: torch.Tensor) -> torch.Tensor:
        """The score, shape (B, 1)."""
        return self.head(e)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of images, shape (B,): higher means a greater label."""
        return self.head(self.backbone(x)).squeeze(1)

    def pair_output(self, sa: torch.Tensor, sb: torch.Tensor) -> torch.Tensor:
        d = (sa - sb).float().squeeze(-1)
        if self.relation == "gt":
            return d
        theta = nn.functional.softplus(self.theta.float())
        if self.relation == "same":
            return theta - d * d
        lp_gt = nn.functional.logsigmoid(d - theta)
        lp_lt = nn.functional.logsigmoid(-d - theta)
        # log P(tie) = log(1 - P(>) - P(<)), kept finite
        lp_eq = torch.log((1 - lp_gt.exp() - lp_lt.exp()).clamp_min(1e-12))
        return torch.stack([lp_lt, lp_gt, lp_eq], -1)


# The registry: the CLI, the config and the studies read model names (and what each can do) here.
MODELS: dict[str, type[RelcompModel]] = {"supervised": SupervisedModel, "siamese": SiameseModel,
                                         "weak": WeakModel, "ranker": RankerModel}

MODEL_HELP = {name: cls.summary for name, cls in MODELS.items()}


def model_class(name: str) -> type[RelcompModel]:
    """The class registered as ``name``.

    Raises:
        ConfigError: unknown name.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name]


def default_loss(cls: type[RelcompModel], relation: str = "gt") -> str:
    """The loss ``--loss auto`` trains ``cls`` with: its first declared one on ``gt``; every other
    relation knows only ``unconditional``."""
    return cls.losses[0] if relation == "gt" else "unconditional"


def build_model(name: str, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                dropout: float = 0.2, relation: str = "gt", input_dim: int | None = None,
                trunk: nn.Module | None = None) -> RelcompModel:
    """Build a model by name (see :data:`MODELS`) for a relation (``gt``, ``ge`` or ``same``;
    relational models only). The model knows nothing of the loss it is trained with.

    The backbone is the paper's CNN on (C, image_size, image_size) images; with ``input_dim`` an
    :class:`~relcomp.backbones.MLPBackbone` on feature vectors of that length; with ``trunk`` (a
    module with a ``dim`` attribute, e.g. :class:`~relcomp.backbones.HFBackbone`) the trunk
    followed by an MLP, trained together.

    Raises:
        ConfigError: unknown name or relation, or an image size the backbone cannot take.
    """
    cls = model_class(name)
    if relation not in RELATIONS:
        raise ConfigError(f"unknown relation {relation!r}; choose from {', '.join(RELATIONS)}")
    if trunk is not None:
        backbone: nn.Module = nn.Sequential(trunk, MLPBackbone(trunk.dim, EMBED_DIM))
    elif input_dim is not None:
        backbone = MLPBackbone(input_dim, EMBED_DIM)
    else:
        if image_size % 4:
            raise ConfigError(f"image size must be a multiple of 4, got {image_size}")
        backbone = BaseModel(in_channels=in_channels, image_size=image_size, dropout=dropout)
    return cls(num_classes=num_classes, relation=relation, dropout=dropout, backbone=backbone)
