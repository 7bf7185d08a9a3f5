"""`ray-app config show | schemas`: the effective config tree, and the JSON schemas of the
`--json` results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ray_app.cli.options import ConfigOpt, config

app = typer.Typer(help="The typed configuration tree and the results' contract.",
                  no_args_is_help=True)  # fmt: skip


@app.command("show")
def config_show(config_file: ConfigOpt = None) -> None:
    """Print the effective configuration: the tree's defaults, --config FILE, the environment.
    Credentials in URIs are masked (`http://***@host`): the output lands in terminals' scroll-
    back and CI logs; the environment still supplies them to a run."""
    from ray_app.core.config import dump_config
    from ray_app.core.redact import redact

    typer.echo(redact(dump_config(config({}, config_file))), nl=False)


@app.command("schemas")
def config_schemas(
    out: Annotated[Path, typer.Option(help="folder for the schema files")] = Path("docs/schemas"),
) -> None:
    """Write the JSON schemas of the train / tune / evaluate `--json` results."""
    from ray_app.training.results import write_json_schemas

    for path in write_json_schemas(out):
        typer.echo(str(path))
