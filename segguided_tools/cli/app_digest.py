"""``segguided app-digest PATH``: the digest a hospital pins in ``approved-app-digests`` after reviewing a release."""

from __future__ import annotations

import argparse
from pathlib import Path

from segguided_tools.cli.command_error import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app-digest",
        help="print the content digest of the app bundle a project folder (or .fab file) makes",
        description=(
            "Print the content digest (sha256:...) of the Flower app bundle that `flwr run PATH` builds "
            "from the project folder PATH, or of the .fab file PATH. A hospital reviews a release (a clean "
            "checkout of its tag), runs this on it and adds the digest to approved-app-digests in its site "
            "config; its ClientApp launcher then runs that release and refuses every other bundle. The "
            "digest covers every file's path and content, not the zip's compression, so the coordinator's "
            "build of the same checkout has the same digest."
        ),
    )
    parser.add_argument("path", type=Path, metavar="PATH", help="a Flower project folder or a .fab file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from client.app_approval import (  # Flower's bundler is slow to import
        AppNotApprovedError,
        project_app_digest,
    )

    try:
        digest = project_app_digest(args.path)
    except (OSError, ValueError, AppNotApprovedError) as error:
        raise CommandError(f"{args.path}: {error}") from None
    print(digest)
    return 0
