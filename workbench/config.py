"""Where the workbench keeps its data, and how settings and secrets are read from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

DATA_DIR_ENV = "WORKBENCH_DATA_DIR"


def read_yaml(path: Path, hints: Mapping[str, str] | None = None) -> Any:
    """A YAML settings file's content; a syntax error is one ConfigError naming the file and line.

    `hints` maps a top-level key to advice added when the error is on that key's line (e.g. how to
    quote a cron expression under ``schedule:``), so other syntax errors do not get it.
    """
    import yaml

    from workbench.errors import ConfigError

    try:
        text = path.read_text()
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        marks = [m for m in (getattr(exc, "context_mark", None), mark) if m is not None]
        lines = text.splitlines()
        at = {lines[m.line].strip() for m in marks if m.line < len(lines)}
        hint = next((h for key, h in (hints or {}).items() if any(s.startswith(f"{key}:") for s in at)), "")
        raise ConfigError(
            f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax{hint}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (not UTF-8): give a YAML settings file") from None


def _umask() -> int:
    """The process umask, read without changing it where /proc tells it (os.umask sets it to read it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode(directory: bool = False) -> int:
    """The mode open() or mkdir() would give a new file or folder under the umask: files made with
    tempfile (mkstemp 0600, mkdtemp 0700) get it before they are renamed into place."""
    return (0o777 if directory else 0o666) & ~_umask()


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
