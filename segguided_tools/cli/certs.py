"""``segguided certs OUT_DIR``: create the federation's CA, SuperLink certificate and SuperNode keys."""

from __future__ import annotations

import argparse
from pathlib import Path

from segguided_tools.cli.command_error import CommandError
from segguided_tools.credentials import (
    CA_CERT,
    CredentialError,
    supernode_key_paths,
    write_credentials,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "certs",
        help="create TLS certificates and SuperNode authentication keys",
        description=(
            "Create, in OUT_DIR, the federation's CA (ca.crt, ca.key), the SuperLink's TLS certificate "
            "(server.pem, server.key) valid for every --host, and one SuperNode authentication key pair "
            "per --hospital (supernodes/NAME.key, supernodes/NAME.pub; ECDSA P-384, OpenSSH format). "
            "Private keys are written 0600. Existing files are kept unless --force is given, so "
            "re-running with one more --hospital only adds that hospital's keys."
        ),
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="credentials folder (created if needed)")
    parser.add_argument(
        "--host", action="append", default=[], required=True, metavar="HOST",
        help="a DNS name or IP address the SuperLink is reached at (repeat for each)",
    )
    parser.add_argument(
        "--hospital", action="append", default=[], metavar="NAME",
        help="create a SuperNode key pair for this hospital (repeat for each)",
    )
    parser.add_argument("--days", type=int, default=825, help="server certificate validity (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace existing files (invalidates handed-out keys)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        actions = write_credentials(args.out_dir, args.host, args.hospital, days=args.days, force=args.force)
    except CredentialError as error:
        raise CommandError(str(error)) from None
    for action in actions:
        mode = " (private, 0600)" if action.private else ""
        print(f"{action.action:>8}  {action.path}{mode}")
    print(f"SuperLink: --ssl-ca-certfile {args.out_dir / CA_CERT} --ssl-certfile/--ssl-keyfile server.pem/server.key")
    for hospital in args.hospital:
        private, public = supernode_key_paths(args.out_dir, hospital)
        print(f"{hospital}: coordinator registers {public}; the hospital gets {args.out_dir / CA_CERT} and {private}")
    return 0
