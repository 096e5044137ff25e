"""``segguided certs OUT_DIR``: the coordinator's CA, SuperLink certificate and SuperExec secret."""

from __future__ import annotations

import argparse
from pathlib import Path

from segguided_tools.cli.command_error import CommandError
from segguided_tools.credentials import (
    CA_CERT,
    LOOPBACK_HOSTS,
    SERVER_CERT,
    SERVER_KEY,
    SUPEREXEC_SECRET,
    CredentialError,
    write_credentials,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "certs",
        help="create the coordinator's CA, SuperLink TLS certificate and SuperExec secret",
        description=(
            "Create, in OUT_DIR (mode 0700), the federation's CA (ca.crt, ca.key), the SuperLink's TLS "
            f"certificate (server.pem, server.key) valid for every --host and for {', '.join(LOOPBACK_HOSTS)}, "
            "and the secret the SuperLink shares with its ServerApp launcher (superexec.secret). Private "
            "files are written 0600 whatever the umask. Existing files are kept unless --force is given; "
            "an existing private file that others may read is refused. Hospitals make their own SuperNode "
            "keys (segguided supernode-key): adding a hospital needs no CA key."
        ),
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="credentials folder (created if needed)")
    parser.add_argument(
        "--host", action="append", default=[], required=True, metavar="HOST",
        help="a DNS name or IP address hospitals reach the Fleet proxy at (repeat for each)",
    )
    parser.add_argument("--days", type=int, default=825, help="server certificate validity (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace existing files (invalidates the old certificate)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        actions = write_credentials(args.out_dir, args.host, days=args.days, force=args.force)
    except CredentialError as error:
        raise CommandError(str(error)) from None
    for action in actions:
        print(action.describe())
    out = args.out_dir
    print(f"SuperLink:  --ssl-ca-certfile {out / CA_CERT} --ssl-certfile {out / SERVER_CERT} "
          f"--ssl-keyfile {out / SERVER_KEY} --superexec-auth-secret-file {out / SUPEREXEC_SECRET}")
    print(f"Hospitals:  send each {out / CA_CERT} (public); keep {out / 'ca.key'} offline")
    return 0
