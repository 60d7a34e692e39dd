"""Command line entry point: `orchestrator run`, `orchestrator envs ...`."""

from __future__ import annotations

import typer
from rich.markup import escape

from orchestrator.cli_envs import envs_app
from orchestrator.cli_models import models_app
from orchestrator.cli_run import run
from orchestrator.errors import OrchestratorError
from orchestrator.render import error_console

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Run video-curation pipelines, one locked env per model."
)
app.command("run")(run)
app.add_typer(envs_app, name="envs")
app.add_typer(models_app, name="models")


def main() -> None:
    """Run the CLI; an OrchestratorError becomes one clear line and exit code 2, never a traceback."""
    try:
        code = app(standalone_mode=False)
    except OrchestratorError as exc:
        error_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except typer.Abort:
        raise SystemExit(130) from None
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        raise
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
