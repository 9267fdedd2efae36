"""Fingerprint every algorithm's tiny run, to show a refactor leaves the numbers alone.

    python tools/algorithm_fingerprint.py record FILE    # run, write the fingerprint
    python tools/algorithm_fingerprint.py check FILE     # run, compare with FILE

One tiny-profile benchmark (every algorithm, hopper-medium, 2 seeds, 200 updates, two
evaluations; a MOPO sweep over ``penalty_coef`` too) into a temporary directory. The fingerprint
of an (algorithm, task) is the multiset of sha256 digests of its final state's array leaves
(names and nesting may change in a refactor, the arrays may not), its records' returns and
metrics, and its pretrained models' digests. ``check`` exits non-zero on any difference and
names what differs. Comparisons are exact: run both on the same machine and library versions.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from offrl_jax import pytrees
from offrl_jax.algorithms.registry import ALGORITHMS
from offrl_jax.training.loop import read_checkpoint
from offrl_jax.training.runner import run_benchmark


def _digests(tree) -> list[str]:
    out = []
    for leaf in jax.tree_util.tree_leaves(tree):
        a = np.asarray(leaf)
        out.append(f"{a.dtype}{list(a.shape)}:{hashlib.sha256(a.tobytes()).hexdigest()[:16]}")
    return sorted(out)


def _run(sweep: dict | None, out: Path) -> dict:
    run_benchmark(sorted(ALGORITHMS) if not sweep else ["mopo"], ["hopper-medium"], [0, 1],
                  "tiny", out, progress=False, sweep=sweep)
    result = {}
    for ckpt in sorted((out / "checkpoints").iterdir()):
        restored, latest = read_checkpoint(ckpt)
        records = [{k: r[k] for k in sorted(r) if k not in ("wall_time", "elapsed")}
                   for r in latest.get("records", [])]
        result[ckpt.name] = {"state": _digests(restored["state"]),
                             "failed": np.asarray(restored["failed"]).tolist(),
                             "records": records}
    models = out / "models"
    if models.exists():
        entries = []
        for path in sorted(p for p in models.iterdir() if p.is_dir() and "tmp" not in p.name):
            arrays, _ = pytrees.load(path)
            entries.append(_digests([arrays[k] for k in sorted(arrays)]))
        result["models"] = sorted(entries)
    return result


def fingerprint() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = {"plain": _run(None, Path(tmp) / "plain"),
               "sweep": _run({"penalty_coef": [0.5, 1.0]}, Path(tmp) / "sweep")}
    return out


def _differences(old, new, path="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        diffs = []
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new:
                diffs.append(f"{path}/{key}: only in {'new' if key in new else 'recorded'}")
            else:
                diffs.extend(_differences(old[key], new[key], f"{path}/{key}"))
        return diffs
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True))
                for d in _differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: recorded {old!r}, now {new!r}"]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "check"):
        print(__doc__)
        return 2
    mode, path = argv[0], Path(argv[1])
    new = json.loads(json.dumps(fingerprint()))
    if mode == "record":
        path.write_text(json.dumps(new, indent=1))
        print(f"wrote {path}")
        return 0
    diffs = _differences(json.loads(path.read_text()), new)
    for line in diffs[:200]:
        print(line)
    print("identical" if not diffs else f"{len(diffs)} difference(s)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
