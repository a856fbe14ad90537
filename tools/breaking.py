"""``buf breaking``: the contracts in proto/ against the ones this work started from.

Usage (from the repository root)::

    .venv/bin/python -m tools.breaking            # what `make lint` runs
    .venv/bin/python -m tools.breaking --against REF

The earlier contracts are those of the merge base with ``main`` when the checkout is a
branch off it, else those of ``HEAD~1`` (CI checks a fresh clone of main, where the last
commit is the new work). A repository with a single commit has nothing to compare with:
the check says so and passes. The old proto/ is taken with ``git archive``, so a git
worktree (whose ``.git`` is a file buf cannot read) works as well as a clone.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUF = REPO_ROOT / "node_modules" / ".bin" / "buf"
PROTO = "proto"


def _git(*args: str) -> str | None:
    """The stripped output of ``git args``, or None when git refuses (no such commit)."""
    done = subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


def earlier_commit() -> str | None:
    """The commit whose contracts the working tree must stay compatible with."""
    head = _git("rev-parse", "HEAD")
    base = _git("merge-base", "HEAD", "main")
    if base and base != head:
        return base
    return _git("rev-parse", "--verify", "--quiet", "HEAD~1^{commit}")


def extract_proto(commit: str, into: Path) -> Path:
    """proto/ as it was at ``commit``, written under ``into``."""
    done = subprocess.run(
        ["git", "archive", "--format=tar", commit, PROTO],
        cwd=REPO_ROOT, capture_output=True, check=True,
    )
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(into, filter="data")
    return into / PROTO


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="a commit or ref (default: see the module doc)")
    args = parser.parse_args(argv)
    commit = args.against or earlier_commit()
    if commit is None:
        print("buf breaking: no earlier commit to compare the contracts with; skipped")
        return 0
    if _git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}") is None:
        print(f"buf breaking: {commit} is not a commit", file=sys.stderr)
        return 2
    if _git("cat-file", "-e", f"{commit}:{PROTO}") is None:
        print(f"buf breaking: {commit} has no {PROTO}/ yet; skipped")
        return 0
    if not BUF.exists():
        print(f"buf breaking: {BUF} is missing; `make tools` installs it", file=sys.stderr)
        return 2
    print(f"buf breaking: {PROTO}/ against {commit}")
    with tempfile.TemporaryDirectory() as tmp:
        old = extract_proto(commit, Path(tmp))
        done = subprocess.run(
            [str(BUF), "breaking", PROTO, "--against", str(old)], cwd=REPO_ROOT, check=False
        )
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
