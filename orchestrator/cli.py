"""Command line entry point: `orchestrator run`, `orchestrator report`, `orchestrator envs ...`,
`orchestrator models ...`.

Whatever a user can fix ends as a line or two of text and an exit code, never a traceback:

    a usage error (unknown option, bad value, missing argument)   the command's usage line, `error: ...`, exit 2
    no command at all                                             the help, exit 2
    an OrchestratorError (a bad config, a missing env, ...)       `error: ...`, exit 2
    Ctrl-C                                                        exit 130
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer
from rich.markup import escape

from orchestrator.cli_envs import envs_app
from orchestrator.cli_models import models_app
from orchestrator.cli_report import report
from orchestrator.cli_run import run
from orchestrator.cli_shards import shards
from orchestrator.errors import OrchestratorError
from orchestrator.render import error_console

click_exceptions = sys.modules[typer.BadParameter.__module__]
"""The exceptions of the click that typer runs on: recent typer releases bundle a copy of click of their own,
older ones import the click package, and `typer.BadParameter` is that click's class either way."""

app = typer.Typer(no_args_is_help=True, add_completion=False, context_settings={"help_option_names": ["-h", "--help"]},
                  help="Run video-curation pipelines, one locked env per model.")
app.command("run")(run)
app.command("report")(report)
app.command("shards")(shards)
app.add_typer(envs_app, name="envs")
app.add_typer(models_app, name="models")


def installed_version() -> str:
    """The version of the installed orchestrator distribution (what `pyproject.toml` declares)."""
    try:
        return version("orchestrator")
    except PackageNotFoundError:
        return "(not installed: run scripts/setup.sh)"


def _print_version(wanted: bool) -> None:
    if wanted:
        print(f"orchestrator {installed_version()}")
        raise typer.Exit()


@app.callback()
def _global_options(
    show_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print the orchestrator's version and exit.")] = False,
) -> None:
    """Run video-curation pipelines, one locked env per model."""


def _error(message: str) -> None:
    error_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _report_click_error(exc: Exception) -> int:
    """Print a click error as one line naming the command's help (the help itself, for a command given
    nothing), and return its exit code."""
    if isinstance(exc, getattr(click_exceptions, "NoArgsIsHelpError", ())):
        exc.show()
    elif isinstance(exc, click_exceptions.UsageError) and exc.ctx is not None:
        _error(f"{exc.format_message()} (see `{exc.ctx.command_path} -h`)")
    else:
        _error(exc.format_message())
    return exc.exit_code


def main() -> None:
    """Run the CLI; exit codes: 0 done, 1 the run had failures, 2 a usage or config error, 130 interrupted."""
    try:
        code = app(prog_name="orchestrator", standalone_mode=False)
    except OrchestratorError as exc:
        _error(str(exc))
        raise SystemExit(2) from None
    except typer.Abort:
        raise SystemExit(130) from None
    except click_exceptions.ClickException as exc:
        raise SystemExit(_report_click_error(exc)) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
