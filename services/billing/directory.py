"""The billing entities file, read into a BillingDirectory.

``IDC_BILLING_ENTITIES_FILE`` points at it (default: the one shipped in
services/billing/data/); a malformed file is a ConfigError naming the variable. Kept apart
from the service's wiring so the usage ingest can read it without importing the servicers.
"""

from __future__ import annotations

import os
from pathlib import Path

from services.billing.domain.entities import BillingDirectory, parse_directory
from services.common.config import ConfigError
from services.common.errors import InvalidArgument

ENTITIES_ENV = "IDC_BILLING_ENTITIES_FILE"
DEFAULT_ENTITIES = Path(__file__).parent / "data" / "billing_entities.toml"


def load_directory(path: Path | None = None) -> BillingDirectory:
    path = path or Path(os.environ.get(ENTITIES_ENV) or DEFAULT_ENTITIES)
    try:
        return parse_directory(path.read_text(encoding="utf-8"), str(path))
    except OSError as error:
        raise ConfigError(f"{ENTITIES_ENV}: cannot read {path}: {error}") from error
    except InvalidArgument as error:
        raise ConfigError(f"{ENTITIES_ENV}: {error.message}") from error
