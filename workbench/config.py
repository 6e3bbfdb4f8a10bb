"""Where the workbench keeps its data, how settings and secrets are read from the environment, and
the one loader of YAML settings files (paper configs, pipelines, promotion gates).

The loader reads a file strictly (a key given twice in a mapping is refused, PyYAML would keep the
last one silently) and remembers the line of every key, then validates the mapping against a
pydantic model. Every problem becomes one `ConfigError` line: ``<file>:<line>: <key path>: <problem>;
<fix>``, an unknown key with a did-you-mean suggestion.

    class Section(ConfigModel):
        port: int | None = None

    section = validate(Section, load_yaml(path))
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import yaml
from dotenv import dotenv_values
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from workbench.errors import ConfigError, did_you_mean

DATA_DIR_ENV = "WORKBENCH_DATA_DIR"

Key = str | int
Model = TypeVar("Model", bound=BaseModel)


# ---------------------------------------------------------------------- reading YAML
@dataclass(frozen=True)
class YamlFile:
    """A YAML file's content, its text, and the line (1-based) of every key and list item in it."""

    path: Path
    data: Any
    text: str = ""
    lines: Mapping[tuple[Key, ...], int] = field(default_factory=dict)

    def line(self, at: tuple[Key, ...]) -> int | None:
        """The line of the key at `at`, or of its nearest enclosing key that has one."""
        for n in range(len(at), 0, -1):
            if at[:n] in self.lines:
                return self.lines[at[:n]]
        return None

    def at(self, *keys: Key) -> str:
        """``<file>:<line>`` of a key, for messages (just the file when the key has no line)."""
        line = self.line(keys)
        return f"{self.path}:{line}" if line is not None else str(self.path)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (merged ``<<`` keys may be overridden)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, list | dict):
            continue  # unhashable; PyYAML refuses it itself
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice; keep one", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _key_lines(loader: _StrictLoader, node: yaml.Node, at: tuple[Key, ...],
               out: dict[tuple[Key, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = str(loader.construct_object(key_node))
            if (*at, key) not in out:
                out[(*at, key)] = key_node.start_mark.line + 1
                _key_lines(loader, value_node, (*at, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*at, i)] = item.start_mark.line + 1
            _key_lines(loader, item, (*at, i), out)


def load_yaml(path: Path, hints: Mapping[str, str] | None = None) -> YamlFile:
    """Read a YAML settings file strictly, with the line of every key; any problem is one ConfigError.

    A syntax error names the file and line; a key given twice in one mapping is refused with both
    (PyYAML would keep the last silently). `hints` maps a top-level key to advice added when a syntax
    error is on that key's line (e.g. how to quote a cron expression under ``schedule:``), so other
    syntax errors do not get it. An empty file reads as an empty mapping.
    """
    path = Path(path)
    text = ""
    try:
        text = path.read_text()
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
            lines: dict[tuple[Key, ...], int] = {}
            if node is not None:
                _key_lines(loader, node, (), lines)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(_syntax_error(path, text, exc, hints)) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (not UTF-8): give a YAML settings file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror or exc}); give a readable YAML file") from None
    return YamlFile(path=path, data={} if data is None else data, text=text, lines=lines)


def _syntax_error(path: Path, text: str, exc: yaml.YAMLError, hints: Mapping[str, str] | None) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if isinstance(exc, yaml.constructor.ConstructorError) and "given twice" in str(problem):
        return f"{path}:{mark.line + 1}: {problem}" if mark is not None else f"{path}: {problem}"
    line = f" line {mark.line + 1}" if mark is not None else ""
    marks = [m for m in (getattr(exc, "context_mark", None), mark) if m is not None]
    lines = text.splitlines()
    at = {lines[m.line].strip() for m in marks if m.line < len(lines)}
    hint = next((h for key, h in (hints or {}).items() if any(s.startswith(f"{key}:") for s in at)), "")
    return (f"{path}{line}: not valid YAML ({problem}); the file is not valid YAML until you fix the "
            f"syntax{hint}")


def read_yaml(path: Path, hints: Mapping[str, str] | None = None) -> Any:
    """A YAML settings file's content (see `load_yaml`, which also keeps the line of every key)."""
    return load_yaml(path, hints).data


# ---------------------------------------------------------------------- validating settings
class ConfigProblem(ValueError):
    """Raised inside a `ConfigModel` validator: `message` for the key at `at` (below the validated one).

    The message follows ``<key path>: `` unless it places the key path itself with ``{key}``
    (``{key}={value} is not a number``).
    """

    def __init__(self, message: str, *at: Key) -> None:
        super().__init__(message)
        self.at = at


class UnknownKey(ConfigProblem):
    """A key a settings mapping does not take; reported at the key's line, under its parent's path."""


def unknown_key(key: Any, allowed: Iterable[str], noun: str = "key") -> str:
    """The one message for a misspelt settings key: ``unknown key 'x' (did you mean 'y'?); use a, b``."""
    names = list(allowed)
    return f"unknown {noun} {str(key)!r}{did_you_mean(str(key), names)}; use {', '.join(names)}"


class ConfigModel(BaseModel):
    """Base of the settings models: unknown keys refused with a suggestion, frozen, strict types.

    `key_noun` names a key in the unknown-key message (``unknown option 'x'``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)
    key_noun: ClassVar[str] = "key"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            names = [f.alias or name for name, f in cls.model_fields.items()]
            for key in data:
                if key not in names:
                    raise UnknownKey(unknown_key(key, names, cls.key_noun), str(key))
        return data


_PROBLEMS = {
    "missing": "is missing; add it",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be text",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
}


def validate(model: type[Model], source: YamlFile | Any, *, where: str | None = None) -> Model:
    """`source` (a `load_yaml` file, or plain data named `where`) validated against `model`.

    The first problem becomes one ConfigError line ``<file>:<line>: <key path>: <problem>; <fix>``.
    """
    data = source.data if isinstance(source, YamlFile) else source
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(config_message(exc.errors(include_url=False)[0], source, where)) from None


def config_message(error: Mapping[str, Any], source: YamlFile | Any, where: str | None = None) -> str:
    """One of pydantic's errors as the workbench's one-line message (see `validate`)."""
    loc: tuple[Any, ...] = tuple(error["loc"])
    problem = str(error.get("msg", ""))
    cause = (error.get("ctx") or {}).get("error")
    unknown = isinstance(cause, UnknownKey)
    if isinstance(cause, ConfigProblem):
        loc, problem = loc + cause.at, str(cause)
    elif isinstance(cause, ValueError):
        problem = str(cause)
    elif error["type"] in ("literal_error", "enum"):
        choices = re.findall(r"'([^']*)'", str(error["ctx"].get("expected", "")))
        value = error.get("input")
        problem = (f"{value!r} is not one of the choices{did_you_mean(str(value), choices)}; "
                   f"use {', '.join(choices)}")
    else:
        text = _PROBLEMS.get(error["type"]) or re.sub(r"^Input should", "must", problem)
        problem = text if error["type"] == "missing" else f"{text}, got {error.get('input')!r}"
    data = source.data if isinstance(source, YamlFile) else source
    at = _data_path(data, loc)
    shown = at[:-1] if unknown else at
    path = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in shown).lstrip(".")
    place = source.at(*at) if isinstance(source, YamlFile) else where or ""
    text = problem.replace("{key}", path) if "{key}" in problem else f"{path}: {problem}" if path else problem
    return f"{place}: {text}" if place else text


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Key, ...]:
    """The keys and list positions of `loc` that address the data (pydantic's union and validator
    tags are left out); a last key the data lacks (a missing one) stays."""
    out: list[Key] = []
    for i, part in enumerate(loc):
        if isinstance(data, Mapping) and (part in data or str(part) in {str(k) for k in data}):
            data = data[part] if part in data else next(v for k, v in data.items() if str(k) == str(part))
            out.append(str(part))
        elif isinstance(data, list | tuple) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
            out.append(part)
        elif i == len(loc) - 1 and isinstance(part, str) and isinstance(data, Mapping | None):
            out.append(part)
    return tuple(out)


# ---------------------------------------------------------------------- environment
def seconds(text: Any) -> float:
    """A duration (2s, 500ms, 1m, or a number of seconds) in seconds; a ConfigProblem otherwise."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(text))
    if not m or isinstance(text, bool):
        raise ConfigProblem(f"{{key}}={text!r} is not a duration; write e.g. 2s, 500ms or 1m")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


# a duration setting: seconds as a number, or text such as 2s, 500ms, 1m, 6h
Duration = Annotated[Any, AfterValidator(seconds)]


def split_list(values: str) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``: a comma-separated option (symbols, names), blanks dropped.

    Here rather than with the strategy grids because every part reads such lists (the data sync too).
    """
    return [v.strip() for v in values.split(",") if v.strip()]


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


def redact_url(url: str) -> str:
    """A database or storage URL with any password replaced, safe to print and record."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


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
