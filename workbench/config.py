"""Where the workbench keeps its data, and how settings and secrets are read from the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

DATA_DIR_ENV = "WORKBENCH_DATA_DIR"


def read_yaml(path: Path, hint: str = "") -> Any:
    """A YAML settings file's content; a syntax error is one ConfigError naming the file and line."""
    import yaml

    from workbench.errors import ConfigError

    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax{hint}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (not UTF-8): give a YAML settings file") from None


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
