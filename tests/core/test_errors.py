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


def test_no_library_module_imports_the_cli_or_rich() -> None:
    """Library code logs and reports progress; only cultureclip.cli renders (walks every
    import statement, inside functions too)."""
    import ast
    from pathlib import Path

    import cultureclip

    package = Path(cultureclip.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.parts[0] == "cli" or relative.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name == "rich" or name.startswith(("rich.", "cultureclip.cli")):
                    offenders.append(f"{relative}:{node.lineno}: {name}")
    assert offenders == []
