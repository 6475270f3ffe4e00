"""One error base: user errors are one line (exit 2); anything else is a bug with its traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cultureclip.cli.main import app
from cultureclip.core.errors import (
    DiskFullError,
    InputError,
    MissingInputError,
    UnknownNameError,
    UserError,
)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (InputError, ValueError),
        (MissingInputError, FileNotFoundError),
        (UnknownNameError, KeyError),
        (DiskFullError, OSError),
    ],
)
def test_user_errors_are_also_the_builtin_a_caller_expects(error, builtin) -> None:
    exc = error("what went wrong and how to fix it")
    assert isinstance(exc, UserError) and isinstance(exc, builtin)
    assert str(exc) == "what went wrong and how to fix it"  # no KeyError quotes


def _failing_train(exc: Exception):
    def train(config):
        raise exc

    return train


def test_a_user_error_is_one_line_and_exit_2(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr("cultureclip.train.train", _failing_train(InputError("bad data: line 3")))
    args = ["train", "--data", "d.jsonl", "-o", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.strip() == "error: bad data: line 3"
    debug = CliRunner().invoke(app, ["--debug", *args])
    assert debug.exit_code == 2 and "Traceback" in debug.output


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr("cultureclip.train.train", _failing_train(KeyError("step")))
    result = CliRunner().invoke(app, ["train", "--data", "d.jsonl", "-o", str(tmp_path)])
    assert result.exit_code == 1 and isinstance(result.exception, KeyError)
    assert "error:" not in result.output


def test_no_library_module_imports_the_cli_or_rich_at_import_time() -> None:
    import pkgutil
    import subprocess
    import sys

    import cultureclip

    modules = [
        m.name
        for m in pkgutil.walk_packages(cultureclip.__path__, "cultureclip.")
        if not m.name.startswith(("cultureclip.cli", "cultureclip.__main__"))
    ]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        pass\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('cultureclip.cli', 'rich')))\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
