"""The ``segguided`` command line: one entry point, one module per sub-command.

Each sub-command module exposes ``register(subparsers)``, which adds its parser and sets
``handler`` to a function taking the parsed arguments and returning an exit code. A
handler reports bad input by raising ``CommandError``: the user sees one line naming the
file, key or case, not a traceback. Modules keep heavy imports (torch, Flower) inside
their handlers where they can, so that ``segguided --help`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from segguided_tools.cli import (
    app_digest,
    certs,
    evaluate,
    experiment,
    qa,
    segment,
    supernode_key,
    synth,
)
from segguided_tools.cli.command_error import CommandError

SUBCOMMANDS = (segment, evaluate, qa, synth, certs, supernode_key, app_digest, experiment)
"""Every sub-command module, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segguided",
        description="SegGuidedNet brain-tumour segmentation: segment, evaluate, check and synthesise data.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
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
