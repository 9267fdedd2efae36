"""The algorithm interface the training loop and runner rely on, and configs addressed by path.

An algorithm's config is a frozen dataclass whose fields are settings or its parts' configs
(:mod:`offrl_jax.parts`): ``mopo.MOPOConfig().rollouts.horizon``. A setting's *path* is its
dotted name from the algorithm's config (``rollouts.horizon``, ``agent.actor_lr``,
``penalty_coef``); overrides and per-task tables address settings by path, and a path that does
not exist, or a value of the wrong kind, is a :class:`ConfigError` naming the valid paths.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from offrl_jax.parts import set_parts


class ConfigError(ValueError):
    """An override or per-task setting names no setting of a config, or has the wrong kind of
    value."""


def config_paths(config) -> dict[str, Any]:
    """``{path: value}`` of every setting of ``config`` (a config instance), parts flattened:
    ``{"agent.actor_lr": 1e-4, ..., "penalty_coef": 1.0}``."""
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            out.update({f"{field.name}.{path}": v for path, v in config_paths(value).items()})
        else:
            out[field.name] = value
    return out


def _check_kind(where: str, field: dataclasses.Field, current, value):
    """``value`` converted to the setting's kind (int to float, list to tuple), or a
    :class:`ConfigError`. The kind comes from the field's annotation (``float | None``)."""
    annotation = field.type if isinstance(field.type, str) else getattr(
        field.type, "__name__", str(field.type))
    kinds = [part.strip() for part in annotation.split("|")]
    if value is None:
        if "None" in kinds:
            return None
        raise ConfigError(f"{where}: expected {annotation}, found None")
    base = kinds[0]
    if isinstance(value, list):
        value = tuple(value)
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base == "str":
        ok = isinstance(value, str)
    elif base.startswith("tuple"):
        ok = isinstance(value, tuple)
    else:
        ok = isinstance(value, type(current))
    if not ok:
        hint = " (a tuple: write 64,64 or 64, for one entry)" if base.startswith("tuple") else ""
        raise ConfigError(f"{where}: expected {annotation}{hint}, found {value!r} "
                          f"({type(value).__name__})")
    return value


def replace_path(config, path: str, value, where: str = "", prefix: str = ""):
    """``config`` with the setting at ``path`` set to ``value`` (checked against the field's
    annotation). Raises :class:`ConfigError` naming the valid paths when there is no such
    setting, or when ``path`` names a part rather than one of its settings. ``where`` names the
    override in messages; ``prefix`` is the path of ``config`` itself inside the root config."""
    where = where or path
    head, _, rest = path.partition(".")
    fields = {f.name: f for f in dataclasses.fields(config)}

    def valid(of=config, at=prefix):
        return ", ".join(f"{at}{p}" for p in sorted(config_paths(of)))

    if head not in fields:
        raise ConfigError(f"{where}: no setting {prefix + head!r}; valid paths: {valid()}")
    current = getattr(config, head)
    if dataclasses.is_dataclass(current):
        if not rest:
            raise ConfigError(f"{where}: {prefix + head!r} is a part; set one of its settings: "
                              f"{valid(current, f'{prefix}{head}.')}")
        return dataclasses.replace(config, **{head: replace_path(current, rest, value, where,
                                                                 f"{prefix}{head}.")})
    if rest:
        raise ConfigError(f"{where}: {prefix + head!r} is a setting, not a part; valid paths: "
                          f"{valid()}")
    try:
        return dataclasses.replace(config, **{head: _check_kind(where, fields[head], current,
                                                                 value)})
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:  # the config's own checks (__post_init__)
        raise ConfigError(f"{where}={value!r}: {error}") from None


def apply_overrides(config, overrides: Mapping[str, Any], where: str = ""):
    """``config`` with every ``{path: value}`` of ``overrides`` set, in order."""
    for path, value in overrides.items():
        config = replace_path(config, path, value, f"{where}{path}")
    return config


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """One algorithm made for one config and one environment: ``make(config, spec)``.

    Making it builds its parts once (networks, optimizers, the rollout machinery, in the optax
    and brax way), so states hold arrays only and the functions below are pure:

    - ``init(key, dataset, pretrained=None) -> state``;
    - ``update(state, dataset, key) -> (state, metrics)``, which samples its own minibatches;
    - ``act(state, obs, key, deterministic=True) -> actions``;
    - ``reference_act(state, obs, key, deterministic=True) -> actions``, when the class defines
      it: a fixed reference policy the algorithm must not fall below (ARMOR's pi_ref); the
      training loop scores it beside the policy at every evaluation, on the same episodes;
    - ``refresh(state, dataset, key) -> state``, when the class defines it: periodic work (model
      rollouts) run every :attr:`refresh_every` updates, outside the inner update scan;
    - ``pretrain(key, dataset) -> pytree``, when the class defines it: the costly part of
      ``init`` that other algorithms and later runs can share (a dynamics model): for the key
      ``init`` receives, exactly what ``init`` would fit; jittable and vmappable over ``key``
      with the dataset shared. ``init(..., pretrained=...)`` (one seed's pytree) then skips
      that fit. :attr:`pretrain_id` names everything besides the dataset, env and key the
      pytree depends on: equal ids, equal pytrees. The training loop fits each seed's pytree
      once and keeps it in a :class:`~offrl_jax.models.store.ModelStore`.

    Subclasses are frozen dataclasses of ``(config, spec)``: equal configs and environments
    make equal algorithms (so jit caches keyed on them hit). Parts built in ``__post_init__``
    are set with :meth:`_parts` and are not fields.
    """

    config: Any
    spec: Any

    name: ClassVar[str] = ""
    refresh: ClassVar[Callable | None] = None
    pretrain: ClassVar[Callable | None] = None
    reference_act: ClassVar[Callable | None] = None

    def _parts(self, **parts) -> None:
        set_parts(self, **parts)

    @property
    def refresh_every(self) -> int:
        """Updates between two ``refresh`` calls (0: the algorithm has none)."""
        return self.config.rollouts.refresh_every if self.refresh is not None else 0

    @property
    def pretrain_id(self) -> str | None:
        return None

    def init_updates(self, dataset_size: int) -> int:
        """Gradient steps ``init`` itself runs per seed besides a ``pretrain`` fit (ATAC's and
        ARMOR's warm starts, RAMBO's behaviour cloning): one compiled call, without progress
        lines or checkpoints until it returns, which the training loop says beforehand."""
        return 0

    def init(self, key, dataset, pretrained=None):
        raise NotImplementedError

    def update(self, state, dataset, key):
        raise NotImplementedError

    def act(self, state, obs, key, deterministic: bool = True):
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Registration:
    """An algorithm as the runner sees it, before a config and environment are chosen: its name,
    config class, ``make(config, spec) -> Algorithm`` and per-dataset settings (``{task: {path:
    value}}``)."""

    name: str
    config_cls: type
    make: Callable
    task_settings: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    # Bumped when the algorithm computes something else for the same config (a corrected
    # loss, halting, penalty): a finished cell or a checkpoint of an earlier version is not
    # taken as this version's (offrl_jax.training.cells, Trainer.fingerprint).
    version: int = 1

    def paths(self) -> dict[str, Any]:
        """``{path: default}`` of every setting of this algorithm's config."""
        return config_paths(self.config_cls())

    def make_config(self, task: str | None = None, overrides: Mapping[str, Any] | None = None):
        """The default config, then the task's settings, then explicit overrides (all by
        path; :class:`ConfigError` on an unknown path or a wrong kind of value)."""
        config = self.config_cls()
        if task:
            config = apply_overrides(config, self.task_settings.get(task, {}),
                                     f"{self.name} task setting ({task}) ")
        return apply_overrides(config, overrides or {}, f"{self.name}.")
