"""Where the project keeps models and runtime data (one place, so tests can redirect it)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def models_dir() -> Path:
    """Model store; `MINILLM_DASH_MODELS` overrides (tests point it at a temporary folder)."""
    return Path(os.environ.get("MINILLM_DASH_MODELS", REPO_ROOT / "models"))


def storage_dir() -> Path:
    """Runtime data (database, exports); `MINILLM_DASH_STORAGE` overrides."""
    return Path(os.environ.get("MINILLM_DASH_STORAGE", REPO_ROOT / "storage"))


def default_db_url() -> str:
    """SQLite database under storage/ unless `MINILLM_DASH_DB` names another SQLAlchemy URL."""
    url = os.environ.get("MINILLM_DASH_DB")
    if url:
        return url
    return f"sqlite:///{storage_dir() / 'minillm_dash.sqlite'}"
