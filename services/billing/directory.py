"""The billing entities file, read into a BillingDirectory.

``IDC_BILLING_ENTITIES_FILE`` points at it (default: the one shipped in
services/billing/data/); a malformed file is a ConfigError naming the variable. Kept apart
from the service's wiring so the usage ingest can read it without importing the servicers.
"""

from __future__ import annotations

import os
from pathlib import Path

from babel import Locale, UnknownLocaleError

from services.billing.domain.entities import BillingDirectory, parse_directory
from services.common.config import ConfigError
from services.common.errors import InvalidArgument

ENTITIES_ENV = "IDC_BILLING_ENTITIES_FILE"
DEFAULT_ENTITIES = Path(__file__).parent / "data" / "billing_entities.toml"


def load_directory(path: Path | None = None) -> BillingDirectory:
    path = path or Path(os.environ.get(ENTITIES_ENV) or DEFAULT_ENTITIES)
    try:
        directory = parse_directory(path.read_text(encoding="utf-8"), str(path))
    except OSError as error:
        raise ConfigError(f"{ENTITIES_ENV}: cannot read {path}: {error}") from error
    except InvalidArgument as error:
        raise ConfigError(f"{ENTITIES_ENV}: {error.message}") from error
    for entity in directory.entities.values():
        # Checked here, not on the first export: babel's locale data is files it reads.
        try:
            Locale.parse(entity.locale)
        except (ValueError, UnknownLocaleError):
            raise ConfigError(
                f"{ENTITIES_ENV}: {path} [entities.{entity.id}]: locale {entity.locale!r} is "
                "not a locale babel knows (e.g. en_SG, zh_Hans_CN)"
            ) from None
    return directory
