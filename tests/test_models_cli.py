"""``offrl model train``: parses, trains on the task's dataset, saves a restorable model and
prints the quality report. The dataset loader is replaced by a small synthetic one."""

from __future__ import annotations

import argparse
import json
import types

import numpy as np

import offrl_jax.data
from offrl_jax.models import EnsembleConfig, cli, predict, restore_model


def fake_dataset(task, generated=None):
    assert task.name == "hopper-medium" and generated.parent.name == "tiny"
    rng = np.random.default_rng(0)
    n = 600
    obs = rng.normal(size=(n, 11)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    return types.SimpleNamespace(
        observations=obs, actions=act, rewards=obs[:, :1].copy(),  # (N, 1) is accepted
        next_observations=obs + 0.1 * act.sum(1, keepdims=True),
        terminals=np.zeros(n, np.float32), timeouts=np.zeros(n, np.float32),
        episode_ids=np.zeros(n, np.int32),
    )


def test_model_train_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(offrl_jax.data, "load_task_dataset", fake_dataset, raising=False)
    tiny = EnsembleConfig(num_members=3, num_elites=2, hidden_sizes=(8,),
                          weight_decays=(0.0, 0.0), max_epochs=3)
    monkeypatch.setitem(cli.MODEL_SETTINGS, "test",
                        cli.ModelSettings(tiny, max_transitions=500, data_profile="tiny"))

    parser = argparse.ArgumentParser(prog="offrl")
    cli.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "run"
    args = parser.parse_args(["model", "train", "--task", "hopper-medium", "--profile", "test",
                              "--seed", "3", "--out", str(out)])
    assert args.func(args) == 0

    printed = capsys.readouterr().out
    assert "holdout_mse" in printed and "reward" in printed and "obs[10]" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["transitions"] == 500 and report["holdout_size"] == 100
    assert len(report["holdout_mse"]) == len(report["holdout_nll"]) == 3
    assert report["elites"] == list(np.argsort(report["holdout_mse"])[:2])
    assert [row["dim"] for row in report["per_dimension"]][-1] == "reward"
    assert len(report["per_dimension"]) == 12

    model = restore_model(out / "model")
    assert model.config == tiny and (model.obs_dim, model.act_dim) == (11, 3)
    mean, logvar = predict(model, np.zeros((2, 11), np.float32), np.zeros((2, 3), np.float32))
    assert mean.shape == logvar.shape == (3, 2, 12)


def test_model_settings_are_valid_configs():
    assert cli.MODEL_SETTINGS["full"].config == EnsembleConfig()
    assert cli.MODEL_SETTINGS["quick"].config.max_epochs < EnsembleConfig().max_epochs
    assert cli.default_settings() in cli.MODEL_SETTINGS
