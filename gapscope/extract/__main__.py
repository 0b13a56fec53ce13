"""``python -m gapscope.extract``: the extract, merge and demo commands on their own."""

import typer

from gapscope.extract.commands import register

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
register(app)
app()
