"""Every setting of a training run, and the registries the CLI reads its choices from.

``config.json`` in a run folder is a :class:`TrainConfig`, resolved. Settings that apply to every
run are plain fields; where the data comes from is one nested part, a data source
(:class:`~relcomp.data.sources.MnistSource` or :class:`~relcomp.data.sources.UserSource`), which
validates its own fields.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .annotators import ANNOTATOR_MODELS
from .augment import AUGMENTS
from .backbones import BACKBONES, hf_preprocess, hf_resolved, hf_width, is_hf
from .data.comparisons import CONTRADICTIONS, MAX_LABEL
from .data.pairs import RELATIONS
from .data.sources import SOURCES, MnistSource, UserSource, source_from_dict, source_to_dict
from .errors import ConfigError
from .losses import LOSSES, Loss, get_loss
from .models import MODELS, RelcompModel, default_loss, model_class
from .schema import check_fields
from .unlabeled import UNLABELED

NOISE_CORRECTIONS = ("none", "given", "estimate")
PRECISIONS = ("auto", "bf16", "fp32")
MAX_BATCH = 65_536
MIN_EVAL_EVERY, MAX_EVAL_EVERY = 10_000, 100_000  # the default interval's bounds, in samples
MAX_CLASSES = MAX_LABEL + 1  # ordered classes: a person can rank a few hundred grades, not millions

__all__ = ["AUGMENTS", "BACKBONES", "CONTRADICTIONS", "LOSSES", "MODELS", "NOISE_CORRECTIONS", "PRECISIONS",
           "RELATIONS", "SOURCES", "UNLABELED", "Resolved", "TrainConfig", "resolve"]


@dataclass
class TrainConfig:
    """Every setting of a training run."""

    model: str = "weak"                 # a name of relcomp.models.MODELS
    relation: str = "gt"                # gt (A > B, ties dropped) | ge (ties a third outcome) | same (same class?)
    loss: str = "auto"                  # a name of relcomp.losses.LOSSES; auto: the model's default (its losses[0])
    num_classes: int = 10               # K ordered classes of the weak model (and the supervised head)
    backbone: str = "auto"              # paper (CNN) | mlp (features) | hf:<model id or folder>; auto: by the data
    finetune: bool = False              # hf: train the backbone too (default: frozen, embeddings cached)
    unlabeled: str = "auto"             # on images no comparison touches: auto (see auto_objective) | balance | clusters | iic | off
    unlabeled_batch: int = 64           # unlabeled images per step (128 helps with few comparisons; bench: 1.6x)
    unlabeled_weight: float = 1.0       # weight of the class-balance term
    class_proportions: list[float] | None = None  # the balance term's target (default: equal classes)
    augment: str = "off"                # off | shift | affine | elastic (images only; pairs and unlabeled)
    init_from: str | None = None        # start from this run's best weights (annotation rounds)
    dropout: float = 0.2                # the paper's; 0 makes runs comparable step for step (tests)
    epochs: float | None = None         # budget in passes over the training set ...
    samples: int | None = None          # ... or in samples seen (images or pairs); default: the model's
    eval_every: int | None = None       # samples between evaluations; None: one epoch, within 10k-100k
    batch_size: int | None = None       # None: the model's default (64 supervised, 128 relational)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    noise_correction: str = "none"      # none | given (forward correction with the flip rate) | estimate (from val)
    annotator_model: str = "none"       # none | flip (a flip rate per annotator, learned with the network)
    seed: int = 0                       # model seed: initialisation, batch order, dropout
    device: str = "auto"
    precision: str = "auto"             # auto | bf16 | fp32 (bf16 autocast, fp32 master weights)
    channels_last: bool = True          # NHWC activations: about 1.4x faster with bf16 on CPU, same math
    deterministic: bool = False
    progress: bool = True
    data: MnistSource | UserSource = field(default_factory=MnistSource)

    def validate(self) -> None:
        """Raises: ConfigError on an impossible setting."""
        cls = model_class(self.model)
        _choice("--loss", self.loss, ("auto", *LOSSES))
        loss = loss_name(self)
        _choice("--relation", self.relation, RELATIONS)
        _choice("--noise-correction", self.noise_correction, NOISE_CORRECTIONS)
        _choice("--precision", self.precision, PRECISIONS)
        validate_numbers(self)
        if loss not in cls.losses:
            raise ConfigError(f"--loss {loss} does not apply to the {self.model} model; it takes "
                              f"{', '.join(cls.losses)}")
        if self.relation not in LOSSES[loss].relations:
            raise ConfigError(f"--loss {loss} is a likelihood of the {', '.join(LOSSES[loss].relations)} relation; "
                              f"{self.relation} takes unconditional")
        if self.relation != "gt" and not cls.relational:
            raise ConfigError(f"--relation {self.relation} applies to models trained on pairs")
        for check in (validate_noise, validate_backbone, validate_unlabeled):
            check(self)
        self.data.validate(cls.relational, self.relation)
        self.data.check_feature_dim()

    @property
    def flip_rate(self) -> float:
        """The simulated flip rate of the source (0 for your own data)."""
        return getattr(self.data, "flip_rate", 0.0)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "data"}
        return {**d, "data": source_to_dict(self.data)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> TrainConfig:
        """A config from ``to_dict`` output (an older run folder's goes through
        :func:`relcomp.run.upgrade` first), each field checked against its type.

        Raises:
            ConfigError: a field of another type (``where`` names the file in the message).
        """
        known = check_fields(cls, d, where, skip=("data",))
        return cls(**known, data=source_from_dict(d.get("data", {}), f"{where}: data"))

    def semantic(self) -> dict[str, Any]:
        """The settings that change what is learned (a run may be resumed with other values of the
        rest); their hash names study run folders."""
        d = {k: v for k, v in {**self.to_dict(), "loss": loss_name(self)}.items()
             if k not in NON_SEMANTIC and not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}
        d["data"] = {k: v for k, v in d["data"].items() if k not in NON_SEMANTIC
                     and not (k in LATER_DATA_DEFAULTS and v == LATER_DATA_DEFAULTS[k])}
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.semantic(), sort_keys=True).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Resolved:
    """A config with every look-up done once (:func:`resolve`): what the engine, the trainer and
    evaluation read instead of looking the model class or the loss up again."""

    cfg: TrainConfig                   # as config.json records it: paths absolute, backbone and input chosen
    model_cls: type[RelcompModel]
    loss: Loss                         # what training minimises
    pair_loss: Loss                    # reads the model's pair outputs on cfg.relation (every model)
    batch_size: int                    # per process

    @property
    def relational(self) -> bool:
        return self.model_cls.relational

    def budget(self, n_train: int) -> int:
        """Samples to train for: explicit --samples, else --epochs x set size, else the model's
        default (5 epochs supervised, 150k pairs relational: about a minute on a 2-core CPU)."""
        cfg, cls = self.cfg, self.model_cls
        if cfg.samples is not None:
            return int(cfg.samples)
        epochs = cfg.epochs if cfg.epochs is not None else cls.default_epochs
        if epochs is not None:
            return int(round(epochs * n_train))
        return int(cls.default_samples)

    def eval_interval(self, n_train: int) -> int:
        """Samples between evaluations: explicit --eval-every, else one epoch of ``n_train``, but
        at least 10k (with 100 comparisons an epoch is 100 samples, and validating after each would
        take most of the run) and at most 100k."""
        return int(self.cfg.eval_every or min(max(n_train, MIN_EVAL_EVERY), MAX_EVAL_EVERY))


def resolve(cfg: TrainConfig) -> Resolved:
    """Validate ``cfg`` and do its look-ups once: the model class, the loss (``auto`` -> the
    model's default), the backbone (``auto`` -> by the data), absolute paths, and what the model's
    input is (an hf: model's image size; the feature length D, for a frozen hf: model read from the
    embedding cache).

    Raises:
        ConfigError: an impossible setting.
    """
    cfg.validate()
    cls = model_class(cfg.model)
    data, backbone = cfg.data.resolved(), cfg.backbone
    if data.features:
        backbone, data = "mlp", dataclasses.replace(data, feature_dim=data.read_feature_dim())
    elif is_hf(backbone):
        backbone = hf_resolved(backbone)  # a folder as an absolute path
        data = data.for_images(hf_preprocess(backbone).size, 3)
        if not cfg.finetune:
            data = dataclasses.replace(data, encoder=backbone, feature_dim=hf_width(backbone))
    else:
        backbone = "paper"
    init_from = str(Path(cfg.init_from).expanduser().resolve()) if cfg.init_from else None
    loss = loss_name(cfg)
    done = dataclasses.replace(cfg, backbone=backbone, data=data, init_from=init_from, loss=loss)
    return Resolved(done, cls, get_loss(loss, cfg.relation if cls.relational else None), pair_loss(done),
                    cfg.batch_size or cls.batch_size)


# Settings that do not change what is learned.
NON_SEMANTIC = frozenset({"progress", "device", "data_dir", "resolved"})
# Settings added after 0.3, at their default: left out of the hash, so that study runs hashed
# before they existed keep their folder names.
LATER_DEFAULTS = {"annotator_model": "none"}
LATER_DATA_DEFAULTS = {"test_subset": None}  # the same for the data part


def validate_numbers(cfg: TrainConfig) -> None:
    """Budgets, batch, dropout, learning rate and K in range."""
    if cfg.epochs is not None and cfg.samples is not None:
        raise ConfigError("give --epochs or --samples, not both")
    for name in ("epochs", "samples", "batch_size", "eval_every"):
        v = getattr(cfg, name)
        if v is not None and v <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    for name, top in (("batch_size", MAX_BATCH), ("unlabeled_batch", MAX_BATCH)):
        v = getattr(cfg, name)
        if v is not None and v > top:
            raise ConfigError(f"--{name.replace('_', '-')} must be at most {top:,}, got {v:,}")
    if cfg.lr <= 0 or cfg.weight_decay < 0:
        raise ConfigError(f"--lr must be positive and --weight-decay not negative, got {cfg.lr} and {cfg.weight_decay}")
    if not 0 <= cfg.seed < 2**63:
        raise ConfigError(f"--seed must be from 0 to 2^63 - 1, got {cfg.seed}")
    if not 2 <= cfg.num_classes <= MAX_CLASSES:
        raise ConfigError(f"--classes must be from 2 to {MAX_CLASSES}, got {cfg.num_classes}")


def validate_unlabeled(cfg: TrainConfig) -> None:
    _choice("--unlabeled", cfg.unlabeled, UNLABELED)
    cls = model_class(cfg.model)
    if cfg.unlabeled not in ("auto", "off") and not (cls.relational and cls.classifies):
        raise ConfigError(f"--unlabeled {cfg.unlabeled} needs a model that names classes from pairs (weak); "
                          f"the {cfg.model} model has no classes to balance or cluster")
    _choice("--augment", cfg.augment, AUGMENTS)
    if cfg.unlabeled_batch <= 0 or cfg.unlabeled_weight < 0:
        raise ConfigError("--unlabeled-batch must be positive and --unlabeled-weight not negative")
    if cfg.augment != "off" and (cfg.data.features or (is_hf(cfg.backbone) and not cfg.finetune)):
        raise ConfigError("--augment transforms images; it does not apply to features or a frozen hf: backbone")
    props = cfg.class_proportions
    if props is not None and (len(props) != cfg.num_classes or min(props) <= 0):
        raise ConfigError(f"--class-proportions needs {cfg.num_classes} positive numbers (one per class), "
                          f"got {props}")


def validate_backbone(cfg: TrainConfig) -> None:
    if cfg.backbone not in BACKBONES[:3] and not is_hf(cfg.backbone):
        raise ConfigError(f"--backbone must be one of {', '.join(BACKBONES)}, got {cfg.backbone!r}")
    if cfg.data.features and cfg.backbone not in ("auto", "mlp"):
        raise ConfigError(f"--backbone {cfg.backbone} reads images; --features get an MLP (--backbone mlp)")
    if not cfg.data.features and cfg.backbone == "mlp":
        raise ConfigError("--backbone mlp reads feature vectors; give --features FILE")
    if cfg.finetune and not is_hf(cfg.backbone):
        raise ConfigError("--finetune applies to --backbone hf:...; the paper's CNN and the MLP are always trained")


def validate_noise(cfg: TrainConfig) -> None:
    _choice("--annotator-model", cfg.annotator_model, ANNOTATOR_MODELS)
    corrects = LOSSES[loss_name(cfg)].corrects_noise
    if cfg.annotator_model != "none":
        if not corrects or cfg.noise_correction != "none" or not model_class(cfg.model).relational:
            raise ConfigError("--annotator-model flip models the annotators of a relational model's comparisons "
                              "with the unconditional, conditional or symmetric loss, instead of --noise-correction")
        if cfg.relation == "same":
            raise ConfigError("--annotator-model flip applies to the gt and ge relations")
    if cfg.noise_correction == "none":
        return
    if not corrects:
        raise ConfigError("noise correction applies to the unconditional, conditional and symmetric losses")
    if cfg.noise_correction == "given" and cfg.flip_rate == 0:
        raise ConfigError("--noise-correction given uses --flip-rate as the noise rate; give a --flip-rate > 0")


def loss_name(cfg: TrainConfig) -> str:
    """The loss a config trains with: its ``loss``, or for ``auto`` the model's default
    (:func:`relcomp.models.default_loss`)."""
    return default_loss(model_class(cfg.model), cfg.relation) if cfg.loss == "auto" else cfg.loss


def pair_loss(cfg: TrainConfig) -> Loss:
    """The reader of a config's pair outputs on its relation, through which evaluation scores every
    model on pairs (the supervised model too); for a config read from a run folder, already resolved."""
    return get_loss(loss_name(cfg), cfg.relation)


def _choice(option: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
