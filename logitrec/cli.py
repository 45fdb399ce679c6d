"""The `logitrec` command: one entry point, one subcommand group per pipeline stage."""

import sys

import typer

from export.cli import export_command
from logitrec.bench.cli import bench_app
from logitrec.errors import InputError
from serving.cli import serve_command, token_app
from training.cli import checkpoint_app, evaluate_command, train_command
from training.data.cli import data_app
from training.tune_cli import tune_command

app = typer.Typer(
    help="LogitRec: train, export and serve logit language models as recommenders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.add_typer(checkpoint_app, name="checkpoint")
app.add_typer(token_app, name="token")
app.add_typer(bench_app, name="bench")
app.command("train")(train_command)
app.command("evaluate")(evaluate_command)
app.command("tune")(tune_command)
app.command("export")(export_command)
app.command("serve")(serve_command)


def main() -> None:
    """Run the CLI; user errors become one line on stderr and exit status 2."""
    try:
        app(standalone_mode=False)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as error:  # click's own usage errors carry their exit code
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise
