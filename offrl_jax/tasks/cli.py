"""``offrl tasks``: list the registered tasks with their environments' facts."""

from __future__ import annotations

from offrl_jax.tasks.registry import get_task, list_tasks


def register(subparsers) -> None:
    parser = subparsers.add_parser("tasks", help="list the built-in tasks")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    for name in list_tasks():
        task = get_task(name)
        spec = task.spec
        print(f"{name:28s} {spec.gym_id:14s} obs {spec.obs_dim:3d}  act {spec.act_dim}")
    return 0
