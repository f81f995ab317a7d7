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

# Imported on first use (PEP 562): `relcomp --help` and `--version` need none of it, and the
# library pulls in torch (about a second). `from relcomp import train` works as before.
_LAZY = {
    "BaseModel": ".models", "Callback": ".callbacks", "HFBackbone": ".backbones", "LOSSES": ".losses",
    "Loss": ".losses", "MLPBackbone": ".backbones", "MODELS": ".models", "MnistSource": ".data.sources",
    "Predictor": ".inference", "RankerModel": ".models", "RelcompError": ".errors", "SiameseModel": ".models",
    "StopWhen": ".callbacks", "SupervisedModel": ".models", "TrainConfig": ".config",
    "UserSource": ".data.sources", "ValidationError": ".data.comparisons", "WeakModel": ".models",
    "build_model": ".models", "compare": ".inference", "compare_interval": ".inference", "embed": ".embedding",
    "encode_images": ".backbones", "evaluate_run": ".evaluate", "export_run": ".export",
    "fewshot_eval": ".fewshot", "get_loss": ".losses", "load_comparisons": ".data.comparisons",
    "load_config": ".run", "load_features": ".data.features", "load_images": ".data.images",
    "load_labels": ".data.comparisons", "load_mnist": ".data", "load_run_model": ".run",
    "load_user_data": ".data.user", "make_pairs": ".data", "predict": ".inference",
    "prob_first_greater": ".losses", "rank": ".inference", "relation_loss": ".losses",
    "save_features": ".data.features", "train": ".engine", "write_evaluation": ".evaluate",
    "write_fewshot": ".fewshot",
}


__all__ = [
    "LOSSES", "MODELS", "BaseModel", "HFBackbone", "MLPBackbone", "MnistSource", "Predictor", "RankerModel", "RelcompError", "SiameseModel",
    "SupervisedModel", "TrainConfig", "UserSource", "ValidationError", "WeakModel", "__version__", "build_model",
    "compare", "compare_interval", "embed", "encode_images", "evaluate_run", "export_run", "fewshot_eval", "load_comparisons",
    "load_config", "load_features", "load_images", "save_features",
    "load_labels", "load_mnist", "load_run_model", "load_user_data", "make_pairs", "predict", "prob_first_greater",
    "rank", "relation_loss", "train", "Callback", "StopWhen", "Loss", "get_loss", "write_evaluation", "write_fewshot",
]


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # once: later lookups do not come here
        return value
    raise AttributeError(f"module 'relcomp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
