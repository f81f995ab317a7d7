"""relcomp: learn image classifiers and rankers from relational comparisons ("A > B").

Public API::

    import relcomp
    cfg = relcomp.TrainConfig(model="weak", images="photos/", comparisons="judgements.csv", num_classes=5)
    relcomp.train(cfg, "runs/mine")                       # one training loop for every model
    relcomp.evaluate_run("runs/mine")                     # held-out comparisons (+ labelled items)
    relcomp.predict("runs/mine", ["new.png"])             # class and probabilities
    relcomp.rank("runs/mine", "photos/")                  # ranking.csv + contact sheet

Datasets: :func:`load_mnist`, :func:`make_pairs` (the paper's), :func:`load_user_data`,
:func:`load_images`, :func:`load_comparisons`, :func:`load_labels` (yours).
"""
__version__ = "0.1.0"

from .data import load_mnist, make_pairs  # noqa: E402
from .data.comparisons import ValidationError, load_comparisons, load_labels  # noqa: E402
from .data.images import load_images  # noqa: E402
from .data.user import load_user_data  # noqa: E402
from .errors import RelcompError  # noqa: E402
from .evaluate import evaluate_run, load_run_model  # noqa: E402
from .export import export_run  # noqa: E402
from .fewshot import fewshot_eval  # noqa: E402
from .inference import Predictor, compare, predict, rank  # noqa: E402
from .losses import prob_first_greater  # noqa: E402
from .models import BaseModel, SiameseModel, SupervisedModel, WeakModel, build_model  # noqa: E402
from .train import TrainConfig, train  # noqa: E402

__all__ = [
    "BaseModel", "Predictor", "RelcompError", "SiameseModel", "SupervisedModel", "TrainConfig", "ValidationError",
    "WeakModel", "build_model", "compare", "evaluate_run", "export_run", "fewshot_eval", "load_comparisons",
    "load_images", "load_labels", "load_mnist", "load_run_model", "load_user_data", "make_pairs", "predict",
    "prob_first_greater", "rank", "train", "__version__",
]
