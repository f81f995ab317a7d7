import json

import numpy as np
import pytest

from conftest import mnist_cfg
from relcomp.callbacks import Callback
from relcomp.checkpoint import read_weights
from relcomp.config import resolve
from relcomp.engine import train
from relcomp.errors import ConfigError, DataError
from relcomp.evaluate import evaluate_run, write_evaluation
from relcomp.models import MODELS
from relcomp.utils import read_jsonl


def tiny(model="weak", **kw):
    base = dict(model=model, pairs="4000", samples=3000, train_subset=2000, val_subset=500, val_pairs=1000,
                eval_every=1000, precision="fp32", progress=False)
    base.update(kw)
    return mnist_cfg(**base)


def test_budget_arithmetic():
    def run(**kw):
        return resolve(mnist_cfg(**kw))

    assert run(model="siamese", samples=5_000_000).budget(50_000) == 5_000_000
    assert run(model="siamese", epochs=100).budget(50_000) == 5_000_000
    assert run(model="siamese", epochs=1).budget(5_000_000) == 5_000_000
    assert run(model="siamese", epochs=10).budget(500_000) == 5_000_000
    assert run(model="siamese", pairs="50k").budget(50_000) == 150_000
    assert run(model="supervised").budget(50_000) == 250_000
    assert run(model="supervised").batch_size == 64
    assert run(model="siamese", pairs="50k").batch_size == 128


def test_resolve_does_the_look_ups_once():
    r = resolve(mnist_cfg(model="weak", relation="ge"))
    assert r.model_cls is MODELS["weak"] and r.cfg.loss == "unconditional" and r.cfg.backbone == "paper"
    assert r.loss.relation == "ge" and r.pair_loss.relation == "ge"
    s = resolve(mnist_cfg(model="supervised"))
    assert s.loss.relation is None and s.pair_loss.relation == "gt"  # labels train it; pairs score it
    assert mnist_cfg(model="weak").loss == "auto"  # the config stores what it is given


@pytest.mark.parametrize("bad", [dict(model="cnn"), dict(loss="x"), dict(model="siamese", loss="paper-code"),
                                 dict(epochs=1, samples=10), dict(samples=0), dict(pairs="abc"), dict(lr=0),
                                 dict(dropout=1.5), dict(dropout=-0.1)])
def test_invalid_configs(bad):
    with pytest.raises(ConfigError):
        mnist_cfg(**bad).validate()


@pytest.mark.mnist
@pytest.mark.parametrize("model", ["supervised", "siamese", "weak"])
def test_tiny_end_to_end(model, mnist, data_dir, tmp_path):
    # the supervised run is evaluated on the whole test split; the others on its first 2,000 images
    n_test = 10_000 if model == "supervised" else 2_000
    cfg = tiny(model, data_dir=str(data_dir), test_subset=None if model == "supervised" else n_test)
    s = train(cfg, tmp_path / "run")
    assert s["finished"] and s["samples"] == 3000
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["samples"] for r in rows] == [1000, 2000, 3000]
    if model == "supervised":  # 64 per batch, evaluation every 1000: 15 full batches + 40 per interval
        assert s["steps"] == 3 * 16
    else:
        assert s["steps"] == 3 * 8
    for f in ("config.json", "best.safetensors", "curves.png", "checkpoint.json"):
        assert (tmp_path / "run" / f).exists()
    # auto on 2,000 images: the balance term (grouping pays from 20k images); none without classes
    want = "balance" if model == "weak" else None
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]["unlabeled"] == want
    _, meta = read_weights(tmp_path / "run" / "best.safetensors")
    assert meta["relcomp_model"] == model
    r = evaluate_run(tmp_path / "run")
    assert not (tmp_path / "run" / "eval.json").exists()  # computing writes nothing
    write_evaluation(tmp_path / "run", r)
    assert r["n_test_pairs"] == 2 * n_test and r["n_test_images"] == n_test
    assert 0.6 < r["relational_accuracy"] <= 1.0  # far above chance after 3000 samples
    if model == "siamese":
        assert r["classification_accuracy"] is None and r["confusion_matrix"] is None
    else:
        # the weak model's classes emerge later than its relations (3000 pairs); its accuracy must be
        # the confusion matrix's, and the supervised model must be far above chance
        cm = np.array(r["confusion_matrix"])
        assert cm.shape == (10, 10) and cm.sum() == n_test
        assert r["classification_accuracy"] == pytest.approx(np.trace(cm) / n_test)
        if model == "supervised":
            assert r["classification_accuracy"] > 0.6
        assert (tmp_path / "run" / "confusion.png").exists()
    assert json.loads((tmp_path / "run" / "eval.json").read_text()) == r


@pytest.mark.mnist
def test_resume_after_crash_matches_uninterrupted(mnist, data_dir, tmp_path, monkeypatch):
    train(tiny("weak", data_dir=str(data_dir), deterministic=True, samples=1500, eval_every=500), tmp_path / "full")

    class CrashAfterSecondCheckpoint(Callback):  # a caller's callback runs after the checkpoint is written
        def on_eval(self, trainer, row):
            if row["samples"] == 1000:
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated"):
        train(tiny("weak", data_dir=str(data_dir), deterministic=True, samples=1500, eval_every=500), tmp_path / "crashed",
              callbacks=[CrashAfterSecondCheckpoint()])
    assert len(read_jsonl(tmp_path / "crashed" / "metrics.jsonl")) == 2
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny("weak", data_dir=str(data_dir), deterministic=True, samples=1500, eval_every=500), tmp_path / "crashed")
    s = train(tiny("weak", data_dir=str(data_dir), deterministic=True, samples=1500, eval_every=500), tmp_path / "crashed", resume=True)
    assert s["finished"] and s["samples"] == 1500
    full, crashed = read_weights(tmp_path / "full" / "best.safetensors")[0], read_weights(tmp_path / "crashed" / "best.safetensors")[0]
    for k in full:
        assert np.allclose(full[k].numpy(), crashed[k].numpy(), atol=1e-6), k
    assert (tmp_path / "full" / "metrics.jsonl").read_text() == (tmp_path / "crashed" / "metrics.jsonl").read_text()


@pytest.mark.mnist
@pytest.mark.parametrize("recorded, want", [("iic", "IICObjective"), (None, "BalanceObjective"), ("foo", None)])
def test_a_resumed_run_keeps_the_unlabeled_objective_it_started_with(data_dir, tmp_path, recorded, want):
    # `auto`'s rule may change between versions; a resumed run goes on with the objective its
    # config.json records (one started before the record ran auto as the balance term)
    seen = []

    class Stop(Callback):
        def on_eval(self, trainer, row):
            seen.append(type(trainer.objective).__name__)
            if row["samples"] == 1000 and not (tmp_path / "resumed").exists():
                raise RuntimeError("stop")

    cfg = tiny("weak", data_dir=str(data_dir), samples=2000, unlabeled="auto")
    with pytest.raises(RuntimeError):
        train(cfg, tmp_path / "r", callbacks=[Stop()])
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["resolved"]["unlabeled"] == "balance"
    if recorded is None:
        del config["resolved"]["unlabeled"]
    else:
        config["resolved"]["unlabeled"] = recorded
    (tmp_path / "r" / "config.json").write_text(json.dumps(config))
    (tmp_path / "resumed").mkdir()
    if want is None:
        with pytest.raises(DataError, match="resolved.unlabeled is 'foo'"):
            train(cfg, tmp_path / "r", resume=True)
        return
    train(cfg, tmp_path / "r", resume=True, callbacks=[Stop()])
    assert seen == ["BalanceObjective", want]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["resolved"]["unlabeled"] == (recorded or "balance")


@pytest.mark.mnist
def test_other_config_in_run_folder_is_refused(mnist, data_dir, tmp_path):
    train(tiny("siamese", samples=1000, data_dir=str(data_dir)), tmp_path / "r")
    with pytest.raises(ConfigError, match="another config"):
        train(tiny("siamese", samples=2000, data_dir=str(data_dir)), tmp_path / "r")


@pytest.mark.mnist
def test_ctrl_c_mid_interval_resumes_to_the_same_metrics_byte_for_byte(data_dir, tmp_path, monkeypatch):
    import os
    import signal

    from relcomp.errors import TrainingInterrupted

    def cfg():
        return tiny("weak", data_dir=str(data_dir), deterministic=True)

    train(cfg(), tmp_path / "full")

    class CtrlCAtStep12(Callback):
        def on_step_end(self, trainer):
            if trainer.state.step == 12:  # 1,512 samples: in the middle of the second evaluation interval
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="interrupted after 1,512 samples"):
        train(cfg(), tmp_path / "cut", callbacks=[CtrlCAtStep12()])
    assert len(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == 1
    s = train(cfg(), tmp_path / "cut", resume=True)
    assert s["finished"] and s["samples"] == 3000
    assert (tmp_path / "cut" / "metrics.jsonl").read_bytes() == (tmp_path / "full" / "metrics.jsonl").read_bytes()


def test_old_run_folders_are_upgraded_in_one_place(tmp_path):
    """A flat config.json (the data settings beside the rest), one without a backbone and one with the
    loss's first name all load as today's config, through relcomp.run.upgrade alone."""
    from relcomp.config import TrainConfig
    from relcomp.run import load_config, upgrade

    today = TrainConfig(model="weak", loss="unconditional", backbone="paper").to_dict()  # as a run folder records it
    flat = {k: v for k, v in today.items() if k not in ("data", "backbone")} | today["data"] | {"loss": "correct"}
    flat.pop("source")
    (tmp_path / "config.json").write_text(json.dumps(flat))
    cfg = load_config(tmp_path)
    assert cfg.to_dict() == TrainConfig.from_dict(upgrade(today)).to_dict()
    assert cfg.backbone == "paper" and cfg.loss == "unconditional" and cfg.data.source == "mnist"
    assert upgrade([1, 2]) == [1, 2]  # not a config: left for load_config to refuse
