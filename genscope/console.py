"""What every ``genscope`` command prints the same way (interfaces.md §2).

An error a user can cause is one line on standard error, ``error [code]: message``, followed by
exit status 2; the commands that other packages add to ``genscope`` use the same helpers.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

err_console = Console(stderr=True)
out_console = Console()


def fail(code: str, message: str, status: int) -> NoReturn:
    """One line on standard error, ``error [code]: message``, then exit with ``status``."""
    typer.echo(f"error [{code}]: {' '.join(message.split())}", err=True)
    raise typer.Exit(status)
