"""Behaviour policies shipped in the repository, from which every machine regenerates the same
(statistically) datasets without training anything, and the actor files they are made of.

Generation writes and reads them; an algorithm may start from one (ARMOR's reference policy), so
this module stands below both.

Layout: ``offrl_jax/generation/policies/<env>/`` holds

- ``actor_XXXXXXX.npz``: the actor parameters of the behaviour SAC run at env step XXXXXXX
  (float32, flattened ``a/b/c`` keys), one file per snapshot;
- ``manifest.json``: provenance (env, seed, steps, versions, commit, device), the training
  learning curve, the role of each snapshot (``medium``, ``expert``, and the
  ``medium_replay`` schedule: which snapshot collects how many transitions), each file's
  sha256 and its evaluation, and the reference statistics of the generated datasets;
- ``learning_curve.png``.

Every loaded file is checked against its sha256 in the manifest; a mismatch is an error that
names the file, the expected and the found digest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from offrl_jax.files import atomic_output

POLICY_ROOT = Path(__file__).parent / "generation" / "policies"
MANIFEST_FORMAT = 1


class PolicyFileError(ValueError):
    """A shipped policy file or manifest that is missing, corrupt or inconsistent."""


def policy_dir(env: str, root: str | Path | None = None) -> Path:
    return Path(root if root is not None else POLICY_ROOT) / env


def has_shipped_policies(env: str, root: str | Path | None = None) -> bool:
    return (policy_dir(env, root) / "manifest.json").is_file()


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = np.asarray(value, np.float32)
    return out


def _unflatten(flat):
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def save_actor(path: str | Path, actor_params) -> str:
    """Write the actor parameters (a nested dict of arrays) atomically; returns the sha256."""
    import flax.serialization

    flat = _flatten(flax.serialization.to_state_dict(actor_params))
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **flat)
    return file_sha256(path)


def load_actor(path: str | Path, sha256: str | None = None) -> dict:
    """The nested parameter dict of an actor file, checked against ``sha256`` when given."""
    path = Path(path)
    if not path.is_file():
        raise PolicyFileError(f"{path}: policy file missing")
    if sha256 is not None:
        found = file_sha256(path)
        if found != sha256:
            raise PolicyFileError(f"{path}: sha256 expected {sha256} (manifest), found {found}")
    with np.load(path) as data:
        return _unflatten({k: np.asarray(data[k]) for k in data.files})


def load_manifest(env: str, root: str | Path | None = None) -> dict:
    path = policy_dir(env, root) / "manifest.json"
    if not path.is_file():
        raise PolicyFileError(
            f"{path}: no shipped behaviour policies for {env!r}; train them with "
            f"`offrl data train-behaviour --env {env} --work-dir DIR` and export them with "
            f"`offrl data export-behaviour --env {env} --work-dir DIR`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PolicyFileError(f"{path}: not valid JSON ({err})") from None
    for field, expected in (("format", MANIFEST_FORMAT), ("env", env)):
        if manifest.get(field) != expected:
            raise PolicyFileError(f"{path}: field {field!r} expected {expected!r}, found "
                                  f"{manifest.get(field)!r}")
    for field in ("policies", "medium_replay", "data_version"):
        if field not in manifest:
            raise PolicyFileError(f"{path}: field {field!r} missing")
    return manifest


def write_manifest(env: str, manifest: dict, root: str | Path | None = None) -> Path:
    path = policy_dir(env, root) / "manifest.json"
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    return path


def load_role(env: str, role: str, root: str | Path | None = None,
              manifest: dict | None = None) -> dict:
    """The actor parameters of the ``medium`` or ``expert`` policy, sha256-checked."""
    manifest = manifest or load_manifest(env, root)
    try:
        entry = manifest["policies"][role]
    except KeyError:
        raise PolicyFileError(f"{policy_dir(env, root) / 'manifest.json'}: field "
                              f"'policies.{role}' missing; found roles "
                              f"{sorted(manifest['policies'])}") from None
    return load_actor(policy_dir(env, root) / entry["file"], entry["sha256"])
