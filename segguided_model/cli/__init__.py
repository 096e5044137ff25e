"""The ``segguided`` command line: one entry point, one module per sub-command.

Each sub-command module exposes ``register(subparsers)``, which adds its parser and sets
``handler`` to a function taking the parsed arguments and returning an exit code. A
handler reports bad input by raising ``CommandError``: the user sees one line naming the
file, key or case, not a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "segguided_model.cli.segment",
    "segguided_model.cli.evaluate",
    "segguided_model.cli.qa",
    "segguided_model.cli.synth",
    "segguided_model.cli.certs",
    "server.experiments.command",  # the Flower layer's command, imported by name (lazily)
)


class CommandError(Exception):
    """Bad input to a sub-command: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segguided",
        description="SegGuidedNet brain-tumour segmentation: segment, evaluate, check and synthesise data.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue  # sub-command not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CommandError as error:
        print(f"segguided {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
