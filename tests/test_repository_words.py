"""The repository speaks to its users: no words about how the suite was developed (work
sessions, waves, numbered issues of a tracker the user does not have, the machines it was built
on) in any tracked text file. Run directories under results/ are written by runs and are not
checked."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Each pattern with what it catches; all are matched case-insensitively.
PATTERNS = {
    # pytest's fixture scope ("session") is an API name, not a work session.
    "a work session": r"(?<!scope=\")\bsessions?\b",
    "a wave of work": r"\bwaves?(?:-?\d+)?\b",
    "a numbered issue": r"\bissues? #?\d{1,2}\b",
    "the issue as a document": r"\bthe issue's\b|\b(?:reproduction|this|that) issue\b"
                               r"|\bissue(?:'s)? targets?\b",
    "a pass of work": r"\bfidelity pass\b",
    "the machines it was built on": r"\bdevelopment machine\b|\bthe lease\b|\blent\b",
}
_COMPILED = {name: re.compile(pattern, re.IGNORECASE) for name, pattern in PATTERNS.items()}

# Written by runs (records, run.json, their READMEs), not by hand; and this file names the words.
EXCLUDED_PREFIXES = ("results/",)
EXCLUDED_FILES = {"tests/test_repository_words.py"}
BINARY_SUFFIXES = {".npz", ".png", ".hdf5", ".h5", ".pkl", ".gz", ".zip", ".jpg", ".pdf"}


def tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    out = []
    for name in listed.decode().split("\0"):
        path = REPO / name
        if (not name or name.startswith(EXCLUDED_PREFIXES) or name in EXCLUDED_FILES
                or path.suffix in BINARY_SUFFIXES or not path.is_file()):
            continue
        out.append(path)
    return out


def hits(text: str) -> list[tuple[int, str, str]]:
    """``(line number, what, matched text)`` for every development-process word in ``text``."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for name, pattern in _COMPILED.items():
            for match in pattern.finditer(line):
                found.append((number, name, match.group(0)))
    return found


def test_patterns_spare_legitimate_uses():
    legitimate = [
        '@pytest.fixture(scope="session")',
        "see [google/jax#8409](https://github.com/google/jax/issues/8409)",
        "brax 0.14.2 calls it (brax issue 671, open)",
        "a waveform", "the release notes", "Ray starts on this machine for this run",
    ]
    assert [hits(line) for line in legitimate] == [[]] * len(legitimate)
    caught = ["the next session", "a multi-session job", "the wave-2 algorithms",
              "what issue 19 calls", "the issue's targets", "the reproduction issue budgeted",
              "since the fidelity pass", "made on the development machine", "The lease allowed",
              "one H200 lent for 15 minutes"]
    assert all(hits(line) for line in caught), [line for line in caught if not hits(line)]


def test_no_development_process_words_in_tracked_files():
    problems = []
    for path in tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, name, word in hits(text):
            problems.append(f"{path.relative_to(REPO)}:{number}: {word!r} ({name})")
    assert not problems, ("words about how the suite was developed, not about using it:\n"
                          + "\n".join(problems))
