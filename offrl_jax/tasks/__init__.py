"""Environments' facts, termination functions, normalized scores and the task registry."""

from offrl_jax.tasks.registry import (
    DATASET_KINDS,
    Task,
    get_task,
    list_tasks,
    parse_task_argument,
    register_task,
)
from offrl_jax.tasks.specs import ENV_SPECS, EnvSpec, get_env_spec, normalized_score

__all__ = [
    "DATASET_KINDS", "ENV_SPECS", "EnvSpec", "Task", "get_env_spec", "get_task", "list_tasks",
    "normalized_score", "parse_task_argument", "register_task",
]
