"""relcomp: learn image classifiers and rankers from relational comparisons ("A > B").

Public API::

    import relcomp
    data = relcomp.UserSource(images="photos/", comparisons="judgements.csv")
    cfg = relcomp.TrainConfig(model="weak", num_classes=5, data=data)
    relcomp.train(cfg, "runs/mine")                       # one training loop for every model
    relcomp.evaluate_run("runs/mine")                     # held-out comparisons (+ labelled items)
    stop = relcomp.StopWhen(lambda model, row: row["val_rel_acc"] > 0.95)   # a callback: stop early
    relcomp.train(cfg, "runs/early", callbacks=[stop])
    relcomp.predict("runs/mine", ["new.png"])             # class and probabilities
    relcomp.rank("runs/mine", "photos/")                  # ranking.csv + contact sheet

Data: :class:`MnistSource` (the paper's), :class:`UserSource` (yours), :func:`load_mnist`,
:func:`make_pairs`, :func:`load_user_data`, :func:`load_images`, :func:`load_comparisons`,
:func:`load_labels`, :func:`load_features`, :func:`save_features`. Models: :data:`MODELS` (the
registry), :func:`build_model`, :class:`MLPBackbone` (features), :class:`HFBackbone` and
:func:`encode_images` (Hugging Face vision models); :func:`embed` writes features of an image set.
"""
__version__ = "0.3.0"  # the one place the version is written (pyproject.toml reads it)

from .backbones import HFBackbone, MLPBackbone, encode_images
from .callbacks import Callback, StopWhen
from .config import TrainConfig
from .data import load_mnist, make_pairs
from .data.comparisons import ValidationError, load_comparisons, load_labels
from .data.features import load_features, save_features
from .data.images import load_images
from .data.sources import MnistSource, UserSource
from .data.user import load_user_data
from .embed import embed
from .engine import train
from .errors import RelcompError
from .evaluate import evaluate_run, write_evaluation
from .export import export_run
from .fewshot import fewshot_eval, write_fewshot
from .inference import Predictor, compare, compare_interval, predict, rank
from .losses import LOSSES, Loss, get_loss, prob_first_greater, relation_loss
from .models import MODELS, BaseModel, RankerModel, SiameseModel, SupervisedModel, WeakModel, build_model
from .run import load_config, load_run_model

__all__ = [
    "LOSSES", "MODELS", "BaseModel", "HFBackbone", "MLPBackbone", "MnistSource", "Predictor", "RankerModel", "RelcompError", "SiameseModel",
    "SupervisedModel", "TrainConfig", "UserSource", "ValidationError", "WeakModel", "__version__", "build_model",
    "compare", "compare_interval", "embed", "encode_images", "evaluate_run", "export_run", "fewshot_eval", "load_comparisons",
    "load_config", "load_features", "load_images", "save_features",
    "load_labels", "load_mnist", "load_run_model", "load_user_data", "make_pairs", "predict", "prob_first_greater",
    "rank", "relation_loss", "train", "Callback", "StopWhen", "Loss", "get_loss", "write_evaluation", "write_fewshot",
]
