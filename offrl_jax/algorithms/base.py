"""The algorithm interface the training loop and runner rely on."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """``init(key, spec, config, dataset) -> state``; ``update(state, dataset, key) ->
    (state, metrics)`` samples its own minibatches; ``act(state, obs, key, deterministic)``.

    ``refresh(state, dataset, key) -> state``, when given, is periodic work (model rollouts) run
    every ``config.refresh_every`` updates, outside the inner update scan.
    """

    name: str
    config_cls: type
    init: Callable
    update: Callable
    act: Callable
    refresh: Callable | None = None
    task_settings: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

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
