"""Where the workbench keeps its data, and how settings and secrets are read from the environment."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values

DATA_DIR_ENV = "WORKBENCH_DATA_DIR"


def data_dir(override: str | Path | None = None) -> Path:
    """Resolve the data root: explicit argument, then $WORKBENCH_DATA_DIR, then ./data."""
    if override is not None:
        return Path(override).expanduser().resolve()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (Path.cwd() / "data").resolve()


def setting(name: str, default: str | None = None) -> str | None:
    """Read a setting from the environment first, then from a `.env` file in the working directory.

    Values are returned, never logged: callers must not print or store secrets they get here.
    """
    value = os.environ.get(name)
    if value:
        return value
    env_file = Path.cwd() / ".env"
    if env_file.is_file():
        value = dotenv_values(env_file).get(name)
        if value:
            return value
    return default
