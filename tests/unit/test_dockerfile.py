"""Static checks of the Dockerfile: no Docker engine runs here, so the rules the image must
follow are read from the file itself. Each rule is also shown to catch a broken Dockerfile."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

BUILD_TOOLS = ("gcc", "g++", "build-essential", "make ", "clang", "cmake", "python3-dev")
SECRET_WORDS = ("PASSWORD", "TOKEN", "PEPPER", "SECRET", "KEY", "DATABASE_URL")
# What the image must not carry: the development packages (the devstack, tests, bench, tools).
DEVELOPMENT = ("devstack", "tests", "bench", "tools")
# Paths a build context must never carry: local state, keys, the git history, development code.
MUST_IGNORE = (
    ".git", ".venv", "node_modules", "var", "**/*.pem", "**/id_ed25519*", ".env", *DEVELOPMENT
)
LOCK = "requirements-runtime.lock"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> list[Stage]:
    """Stages of a Dockerfile, each with its (INSTRUCTION, arguments) in order."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def _base_image_problems(stages: list[Stage]) -> list[str]:
    found: list[str] = []
    for stage in stages:
        image, _, tag = stage.base.partition(":")
        if "@sha256:" not in stage.base and not re.fullmatch(r"\d+\.\d+\.\d+(-[a-z0-9.-]+)?", tag):
            found.append(f"base image {stage.base} is not pinned to a full version or digest")
        if "$" in image or "$" in tag:
            found.append(f"base image {stage.base} comes from a build argument")
    if not re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", stages[-1].base):
        found.append(f"final stage is {stages[-1].base}, not a pinned python:3.11 slim image")
    return found


def _user_problems(final: Stage) -> list[str]:
    users = final.arguments("USER")
    if not users:
        return ["final stage has no USER: the service would run as root"]
    uid = users[-1].split(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        return [f"final USER {users[-1]!r} is not a numeric non-root uid"]
    return []


def _build_tool_problems(final: Stage) -> list[str]:
    runs = " ".join(final.arguments("RUN")).lower()
    found = [
        f"final stage installs build tool {tool.strip()}" for tool in BUILD_TOOLS if tool in runs
    ]
    if "apt-get install" in runs or "apk add" in runs:
        found.append("final stage installs system packages")
    return found


def _dependency_problems(builder: Stage, final: Stage) -> list[str]:
    found: list[str] = []
    runs = builder.arguments("RUN")
    if not any(LOCK in args for args in builder.arguments("COPY")):
        found.append(f"builder stage does not COPY {LOCK}")
    if not any(f"pip install --require-hashes -r {LOCK}" in args for args in runs):
        found.append(f"builder stage does not install {LOCK} with --require-hashes")
    # Any other install must not resolve dependencies past the lock.
    found += [
        f"builder runs pip install without --no-deps or the lock: {args}"
        for args in runs
        if "pip install" in args and LOCK not in args and "--no-deps" not in args
    ]
    if not any(
        args.startswith(f"--from={builder.name}") and "/opt/venv" in args
        for args in final.arguments("COPY")
    ):
        found.append("final stage does not take the virtual environment from the builder")
    return found


def _content_problems(stages: list[Stage]) -> list[str]:
    """The image is the installed package: no development code, no source in the final stage."""
    found = [
        f"a stage copies {word}"
        for stage in stages
        for args in stage.arguments("COPY") + stage.arguments("ADD")
        for word in args.split()[:-1]
        if word.strip("./") in DEVELOPMENT
    ]
    found += [
        f"final stage copies from the build context: COPY {args}"
        for args in stages[-1].arguments("COPY") + stages[-1].arguments("ADD")
        if not args.startswith("--from=")
    ]
    return found


def _secret_problems(stages: list[Stage]) -> list[str]:
    found: list[str] = []
    for stage in stages:
        for keyword in ("ENV", "ARG"):
            for args in stage.arguments(keyword):
                names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
                found += [
                    f"{keyword} {name} in the image looks like a secret"
                    for name in names
                    if any(word in name.upper() for word in SECRET_WORDS)
                ]
    return found


def _command_problems(final: Stage) -> list[str]:
    found: list[str] = []
    if final.arguments("ENTRYPOINT"):
        found.append("ENTRYPOINT fixes the service; the command must choose it")
    commands = final.arguments("CMD")
    if not commands or not re.fullmatch(r'\["python", "-m", "services\.[a-z.]+"\]', commands[-1]):
        found.append("CMD is not the exec form of python -m services.<name>")
    return found


def problems(text: str) -> list[str]:
    """Every rule the Dockerfile breaks, in words; empty when it follows them all."""
    stages = parse(text)
    if len(stages) < 2:
        return ["not a multi-stage build: the final image must not carry the builder"]
    builder, final = stages[0], stages[-1]
    return [
        *_base_image_problems(stages),
        *_user_problems(final),
        *_build_tool_problems(final),
        *_dependency_problems(builder, final),
        *_content_problems(stages),
        *_secret_problems(stages),
        *_command_problems(final),
    ]


def ignore_problems(text: str) -> list[str]:
    entries = {line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"}
    return [f".dockerignore does not exclude {path}" for path in MUST_IGNORE if path not in entries]


def test_dockerfile_follows_every_rule() -> None:
    assert problems(DOCKERFILE.read_text()) == []


def test_dockerignore_keeps_state_and_keys_out_of_the_build_context() -> None:
    assert ignore_problems(DOCKERIGNORE.read_text()) == []


def test_the_default_command_names_a_real_service_module() -> None:
    final = parse(DOCKERFILE.read_text())[-1]
    module = final.arguments("CMD")[-1].split('"')[-2]
    assert (REPO / Path(*module.split("."))).with_suffix("").joinpath("__main__.py").is_file()


def _without_line(text: str, prefix: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(prefix))


BROKEN: dict[str, Callable[[str], str]] = {
    "root user": lambda t: _without_line(t, "USER "),
    "uid 0": lambda t: t.replace("USER 10001:10001", "USER 0"),
    "named user": lambda t: t.replace("USER 10001:10001", "USER app"),
    "compiler in final stage": lambda t: t.replace(
        "USER 10001:10001", "RUN apt-get install -y gcc\nUSER 10001:10001"
    ),
    "unpinned base": lambda t: t.replace("python:3.11.13-slim-bookworm", "python:3.11-slim"),
    "latest base": lambda t: t.replace("python:3.11.13-bookworm", "python:latest"),
    "lock not copied": lambda t: t.replace(
        f"COPY pyproject.toml {LOCK} ./", "COPY pyproject.toml ./"
    ),
    "lock without hashes": lambda t: t.replace(f"--require-hashes -r {LOCK}", f"-r {LOCK}"),
    "project resolves its own dependencies": lambda t: t.replace(
        "pip install --no-deps", "pip install"
    ),
    "devstack in the builder": lambda t: t.replace(
        "COPY idc ./idc", "COPY idc ./idc\nCOPY devstack ./devstack", 1
    ),
    "source tree in final stage": lambda t: t.replace(
        "WORKDIR /app", "WORKDIR /app\nCOPY services ./services"
    ),
    "secret in ENV": lambda t: t.replace("HOME=/tmp", "HOME=/tmp IDC_TOKEN_PEPPER=x"),
    "fixed entrypoint": lambda t: t + '\nENTRYPOINT ["python", "-m", "services.order"]\n',
    "single stage": lambda t: t[t.index("FROM python:3.11.13-slim") :],
}


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_a_broken_dockerfile_is_caught(breakage: str) -> None:
    original = DOCKERFILE.read_text()
    broken = BROKEN[breakage](original)
    assert broken != original, f"the mutation {breakage!r} no longer applies"
    assert problems(broken), f"{breakage} passed the checks"


@pytest.mark.parametrize("entry", ["**/*.pem", "devstack"])
def test_a_dockerignore_that_lets_keys_or_the_devstack_in_is_caught(entry: str) -> None:
    text = DOCKERIGNORE.read_text().replace(f"{entry}\n", "")
    assert ignore_problems(text) == [f".dockerignore does not exclude {entry}"]
