"""Every command of the CLI, run with a table of bad inputs: one error line, never a traceback.

The commands are read from the typer app itself, so a new command is covered without editing this file.
Each run goes through `cli_runner.invoke` (`workbench.cli.app.run`, what the console script runs, with
its last-resort handler) in this process, which keeps the ~150 runs fast; its warnings reach the
command's stderr as a user sees them.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from cli_runner import invoke

import workbench.cli.app as cli

SECONDS_PER_RUN = 60


def _commands() -> Iterator[tuple[list[str], Any]]:
    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        if hasattr(cmd, "commands"):
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd
    yield from walk(typer.main.get_command(cli.app), [])


COMMANDS = list(_commands())


def _args(cmd: Any, value: str) -> list[str]:
    """`value` for every argument and every option that takes a value (flags are left out)."""
    args: list[str] = []
    for p in cmd.params:
        if p.name == "help" or getattr(p, "is_flag", False) or getattr(p, "count", False):
            continue
        if p.param_type_name == "argument":
            args.append(value)
        else:
            args += [p.opts[0], value]
    return args


def _bad_values(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Name -> (global options, value given to every parameter)."""
    corrupt = tmp / "corrupt.yaml"
    corrupt.write_bytes(b"\x00\x9f\xff: [unclosed\n\x07garbage" * 50)
    blocker = tmp / "a-file"
    blocker.write_text("not a folder")
    return {
        "nonexistent path": ([], str(tmp / "missing" / "nothing.yaml")),
        "garbage value": ([], "??garbage??"),
        "corrupt file": ([], str(corrupt)),
        "unwritable data dir": (["--data-dir", str(blocker / "data")], "??garbage??"),
    }


class _Hung(Exception):
    pass


def _run(argv: list[str], cwd: Path) -> tuple[int, str]:
    def hung(*_: object) -> None:
        raise _Hung(f"{' '.join(argv)} still ran after {SECONDS_PER_RUN} s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(SECONDS_PER_RUN)
    try:
        res = invoke(argv, data=cwd / "data", cwd=cwd)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return res.returncode, res.stdout + res.stderr


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_answers_bad_input_with_one_error_line(path: list[str], cmd: Any,
                                                            tmp_path: Path) -> None:
    problems = []
    for case, (glob, value) in _bad_values(tmp_path).items():
        if not glob and not _args(cmd, value):
            continue  # nothing to give a bad value to (e.g. `demo`): only the bad data dir applies
        argv = [*glob, *path, *_args(cmd, value)]
        code, text = _run(argv, tmp_path)  # in tmp_path: no pipelines/, no ./data, defaults point at nothing
        if "Traceback (most recent call last)" in text or "unexpected " in text:
            problems.append(f"{case}: {' '.join(argv)}\n{text}")
        elif code == 0 and "error" in text.lower():
            problems.append(f"{case}: exit 0 after an error: {' '.join(argv)}\n{text}")
        elif code != 0 and "rror" not in text and "Usage" not in text:
            problems.append(f"{case}: exit {code} without saying why: {' '.join(argv)}\n{text}")
    assert not problems, "\n\n".join(problems)


def test_an_unexpected_error_is_one_line_naming_its_log_and_debug_shows_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last resort: a bug (here a broken strategy listing) never shows a traceback by default."""
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug deep inside")

    import workbench.strategies.registry as registry

    monkeypatch.setattr(registry, "list_strategies", broken)
    code, text = _run(["strategies"], tmp_path)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in text, text
    assert "unexpected RuntimeError: a bug deep inside" in lines[0] and "--debug" in lines[0]
    log = Path(lines[0].split("the traceback is in ")[1].split(" ")[0])
    assert log.parent == tmp_path / "data" / "logs"
    assert "Traceback (most recent call last)" in log.read_text()
    assert "a bug deep inside" in log.read_text()
    with pytest.raises(RuntimeError, match="a bug deep inside"):
        _run(["--debug", "strategies"], tmp_path)
