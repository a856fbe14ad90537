"""A migrated provisioning database per test: SQLite files copied from one template."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.common.db import make_engine, make_session_factory, migrate
from services.provisioning.app import MIGRATIONS


@pytest.fixture(scope="session")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("provisioning-db") / "template.db"
    migrate(f"sqlite:///{path}", MIGRATIONS)
    return path


@pytest.fixture
def factory(migrated: Path, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    path = tmp_path / "provisioning.db"
    shutil.copy(migrated, path)
    engine = make_engine(f"sqlite:///{path}")
    yield make_session_factory(engine)
    engine.dispose()
