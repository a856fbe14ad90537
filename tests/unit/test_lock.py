"""The lock files match pyproject.toml: every dependency pinned with hashes, and the image's
runtime lock at the versions of the development lock (`make lock` writes both)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEV_LOCK = REPO / "requirements.lock"
RUNTIME_LOCK = REPO / "requirements-runtime.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """Name -> version of every pin; raises when a pin has no hash."""
    found: dict[str, str] = {}
    entries = re.split(r"\n(?=\S)", text)
    for entry in entries:
        match = PIN.match(entry)
        if match is None:
            continue
        if "--hash=sha256:" not in entry:
            raise ValueError(f"{match.group(1)} is pinned without a hash")
        found[canonical(match.group(1))] = match.group(2)
    return found


def requirement_names(requirements: list[str]) -> set[str]:
    return {canonical(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requirements}


PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_every_runtime_dependency_is_in_both_locks() -> None:
    wanted = requirement_names(PROJECT["dependencies"])
    assert wanted - set(pins(RUNTIME_LOCK.read_text())) == set()
    assert wanted - set(pins(DEV_LOCK.read_text())) == set()


def test_every_development_dependency_and_the_build_backend_are_locked() -> None:
    wanted = requirement_names(PROJECT["optional-dependencies"]["dev"]) | {"setuptools"}
    assert wanted - set(pins(DEV_LOCK.read_text())) == set()


def test_the_runtime_lock_is_the_development_lock_s_versions() -> None:
    dev = pins(DEV_LOCK.read_text())
    runtime = pins(RUNTIME_LOCK.read_text())
    assert {name: (version, dev.get(name)) for name, version in runtime.items()
            if dev.get(name) != version} == {}


def test_a_pin_without_a_hash_is_caught() -> None:
    with pytest.raises(ValueError, match="rich is pinned without a hash"):
        pins("rich==15.0.0\n    # via idc-orchestrator\n")
    assert pins("rich==15.0.0 \\\n    --hash=sha256:ab\n") == {"rich": "15.0.0"}
