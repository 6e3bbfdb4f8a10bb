"""The `workbench` command line run in this process, through typer's CliRunner.

`invoke` calls `workbench.cli.app.run`, the function the console script runs, so a test sees exactly
what a user sees (the one-line errors, the last resort, the exit code) without paying a subprocess and
its imports. What a command changes in the process (environment, working folder, the root options'
state, the root logger's handlers and level) is put back afterwards. During the command the root logger
has no handlers, as in a fresh process, so the CLI's `logging.basicConfig` sends warnings to the
command's stderr where a user sees them (not to pytest's log capture). Tests that need a real process
(signals, the console script, crash recovery) keep one subprocess smoke test per command group:
`spawn` and `run_process` start `python -m workbench.cli` with the same settings.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

NO_RESEARCH = Path(__file__).with_name("_no_research_here_")
WB = [sys.executable, "-m", "workbench.cli"]


def _settings(data: Path | None, env: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """What every command of a test sees: no research strategies, 200 columns, its data folder."""
    settings: dict[str, str | None] = {"WORKBENCH_RESEARCH_DIR": str(NO_RESEARCH), "COLUMNS": "200"}
    if data is not None:
        settings["WORKBENCH_DATA_DIR"] = str(data)
    settings.update(env or {})
    return settings


@dataclass(frozen=True)
class CliResult:
    """What a command printed and returned (the fields of `subprocess.CompletedProcess` tests read)."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def invoke(args: Sequence[str], *, data: Path | None = None, env: Mapping[str, str | None] | None = None,
           cwd: Path | None = None, input: str | None = None) -> CliResult:
    """Run `workbench <args>` in this process; `data` is the data folder (WORKBENCH_DATA_DIR),
    `env` more environment (None unsets), `cwd` the working folder for the command."""
    from workbench.cli.app import run
    from workbench.cli.common import _State

    settings = _settings(data, env)
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        with CliRunner().isolation(input=input, env=settings) as (stdout, stderr, _):
            if cwd is not None:
                os.chdir(cwd)
            code = run([str(a) for a in args])
            return CliResult(list(map(str, args)), code, stdout.getvalue().decode(errors="replace"),
                             stderr.getvalue().decode(errors="replace"))
    finally:
        for handler in root.handlers:  # what basicConfig added, writing to the command's closed stderr
            handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        _State.data_dir, _State.debug, _State.argv = None, False, []


def spawn(args: Sequence[str], *, data: Path | None = None, env: Mapping[str, str | None] | None = None,
          cwd: Path | None = None) -> Callable[..., CliResult]:
    """Start `workbench <args>` in a real process, as a user's shell (or cron) does, with `invoke`'s
    settings; returns the function that waits for it (`timeout` seconds, 300 by default)."""
    argv = [str(a) for a in args]
    merged = {**os.environ, **_settings(data, env)}
    proc_env = {k: v for k, v in merged.items() if v is not None}
    proc = subprocess.Popen([*WB, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=proc_env, cwd=cwd)

    def wait(timeout: float = 300) -> CliResult:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        finally:
            proc.kill()
        return CliResult(argv, proc.returncode, stdout, stderr)
    return wait


def run_process(args: Sequence[str], *, data: Path | None = None, env: Mapping[str, str | None] | None = None,
                cwd: Path | None = None, timeout: float = 300) -> CliResult:
    """`workbench <args>` in a real process, to its end (see `spawn`)."""
    return spawn(args, data=data, env=env, cwd=cwd)(timeout)
