"""relcomp: learn image classifiers and rankers from relational comparisons ("A > B").

Public API::

    from relcomp import TrainConfig, train, evaluate_run, fewshot_eval, load_mnist, make_pairs
"""
__version__ = "0.1.0"

from .data import load_mnist, make_pairs  # noqa: E402
from .errors import RelcompError  # noqa: E402
from .evaluate import evaluate_run  # noqa: E402
from .fewshot import fewshot_eval  # noqa: E402
from .losses import prob_first_greater  # noqa: E402
from .models import BaseModel, SiameseModel, SupervisedModel, WeakModel, build_model  # noqa: E402
from .train import TrainConfig, train  # noqa: E402

__all__ = [
    "BaseModel", "RelcompError", "SiameseModel", "SupervisedModel", "TrainConfig", "WeakModel", "build_model",
    "evaluate_run", "fewshot_eval", "load_mnist", "make_pairs", "prob_first_greater", "train", "__version__",
]
