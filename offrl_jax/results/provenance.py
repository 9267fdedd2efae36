"""Where a run's numbers come from: the code's commit, the libraries' versions and the device,
written to ``run.json`` (:func:`provenance`) and ``cells/*.json``, and the commits that trained
each cell of a run directory (:func:`training_commits`)."""

from __future__ import annotations

import functools
import json
import platform
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path

LIBRARIES = ("offrl_jax", "jax", "jaxlib", "flax", "optax", "mujoco", "mujoco-mjx", "gymnasium",
             "numpy")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide the numbers ("unknown" when absent)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def git_commit() -> tuple[str, bool | None]:
    """``(commit, code modified since it)`` of the package's checkout (``"unknown"``, None
    outside a git checkout)."""
    try:
        git = dict(capture_output=True, text=True, cwd=Path(__file__).parent, check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], **git).stdout.strip()
        # Tracked files edited since that commit: the run's code is not exactly the commit's.
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no",
                                     "--", str(Path(__file__).parents[1])], **git).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", None


@functools.cache
def process_commit() -> tuple[str, bool | None]:
    """:func:`git_commit` as this process first saw it: the code it imported, though the
    checkout may be committed to while a long run goes on."""
    return git_commit()


def training_commits(run_dir: Path) -> dict[str, list[str]]:
    """``{commit: [cell names]}``: the commits whose code trained each cell of ``run_dir``, from
    the invocations in ``cells/*.json`` that trained updates or did not record how many
    (``"not recorded"`` for calls made before invocations carried their commit; ``+changes``
    marks code modified since it)."""
    out: dict[str, list[str]] = {}
    for path in sorted((Path(run_dir) / "cells").glob("*.json")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for call in info.get("invocations") or []:
            if call.get("updates") == 0:  # None: a call from before updates were recorded
                continue
            commit = call.get("commit") or "not recorded"
            commit += "+changes" if call.get("code_modified") else ""
            names = out.setdefault(commit, [])
            if path.stem not in names:
                names.append(path.stem)
    return out


def device_description() -> str:
    """``gpu (NVIDIA H200)``, or on a CPU its model: ``cpu (AMD EPYC)``."""
    import jax

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", "") or ""
    if device.platform == "cpu":
        kind = platform.processor() or platform.machine() or kind
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    kind = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return f"{device.platform} ({kind})"


def provenance(profile: str, argv: list[str] | None = None) -> dict:
    """``run.json``'s description of the process: profile, command line, commit, versions,
    device, Python and host."""
    import jax

    commit, dirty = process_commit()
    return {
        "profile": profile, "argv": argv or [], "commit": commit,
        "code_modified_since_commit": dirty, "versions": library_versions(),
        "device": device_description(),
        "device_count": jax.device_count(), "python": platform.python_version(),
        "host": platform.node(),
    }
