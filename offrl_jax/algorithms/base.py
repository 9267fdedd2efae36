"""The algorithm interface the training loop and runner rely on."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any


def config_subset(cls: type, config):
    """A ``cls`` dataclass built from the fields of ``config`` that it shares by name; the
    fields ``config`` lacks keep ``cls``'s defaults (an algorithm's SAC or ATAC part)."""
    names = [f.name for f in dataclasses.fields(cls)]
    return cls(**{name: getattr(config, name) for name in names if hasattr(config, name)})


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """``init(key, spec, config, dataset) -> state``; ``update(state, dataset, key) ->
    (state, metrics)`` samples its own minibatches; ``act(state, obs, key, deterministic)``.

    ``refresh(state, dataset, key) -> state``, when given, is periodic work (model rollouts) run
    every ``config.refresh_every`` updates, outside the inner update scan.

    ``pretrain(key, spec, config, dataset) -> pytree``, when given, is the costly part of
    ``init`` that other algorithms and later runs can share (a dynamics model): for the key
    ``init`` receives, exactly what ``init`` would train; jittable and vmappable over ``key``
    with the dataset shared. ``init`` then also takes ``pretrained=`` (one seed's pytree) and
    skips that training; without it ``init`` trains it itself. ``pretrain_id(config) -> str``
    names everything besides the dataset, env and key the pytree depends on: equal ids, equal
    pytrees. The training loop fits each seed's pytree once and keeps it in a
    :class:`~offrl_jax.models.store.ModelStore` (``OUT/models/`` under the runner).
    """

    name: str
    config_cls: type
    init: Callable
    update: Callable
    act: Callable
    refresh: Callable | None = None
    pretrain: Callable | None = None
    pretrain_id: Callable | None = None
    task_settings: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if (self.pretrain is None) != (self.pretrain_id is None):
            raise ValueError(f"{self.name}: pretrain and pretrain_id go together; give both or "
                             f"neither")

    def make_config(self, task: str | None = None, overrides: Mapping[str, Any] | None = None):
        """The default config, then the task's settings, then explicit overrides."""
        values = dict(self.task_settings.get(task, {})) if task else {}
        values.update(overrides or {})
        fields = {f.name for f in dataclasses.fields(self.config_cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise KeyError(f"{self.name}: unknown config field(s) {unknown}; valid fields: "
                           f"{sorted(fields)}")
        return self.config_cls(**values)
