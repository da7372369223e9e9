"""The console script: version, help, and the mapping of errors to exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from auditor import __version__
from auditor.cli import app as cli_app
from auditor.errors import TlauditError, UsageError

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(cli_app.app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"tlaudit {__version__}"


def test_help_lists_commands() -> None:
    result = runner.invoke(cli_app.app, ["--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_console_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "auditor", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert __version__ in done.stdout


@pytest.mark.parametrize(("error", "code"), [(TlauditError("bad [x]"), 1), (UsageError("no"), 2)])
def test_errors_map_to_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: Exception, code: int
) -> None:
    def boom() -> None:
        raise error

    monkeypatch.setattr(cli_app, "app", boom)
    with pytest.raises(SystemExit) as exit_info:
        cli_app.main()
    assert exit_info.value.code == code
    assert str(error) in capsys.readouterr().err
