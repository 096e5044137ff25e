"""``segguided supernode-key KEY_DIR --hospital NAME``: a hospital makes its own SuperNode key pair."""

from __future__ import annotations

import argparse
from pathlib import Path

from segguided_tools.cli.command_error import CommandError
from segguided_tools.supernode_keys import (
    PRIVATE_KEY,
    PUBLIC_KEY,
    SupernodeKeyError,
    public_key_fingerprint,
    write_supernode_keys,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "supernode-key",
        help="make this hospital's SuperNode key pair (on the hospital's machine) and print what to send",
        description=(
            "Create, in KEY_DIR (mode 0700), this hospital's SuperNode authentication key pair "
            f"({PRIVATE_KEY}, 0600, and {PUBLIC_KEY}; ECDSA P-384, OpenSSH format) and the secret its "
            "SuperNode shares with its ClientApp launcher (superexec.secret, 0600). Prints the public key "
            "and its fingerprint: send the public key to the coordinator and confirm the fingerprint with "
            "them by phone. The private key never leaves KEY_DIR. Existing files are kept unless --force "
            "is given; an existing private key that others may read is refused. With --fingerprint FILE, "
            "only print the fingerprint of a public key (what the coordinator checks before registering it)."
        ),
    )
    parser.add_argument("key_dir", type=Path, nargs="?", metavar="KEY_DIR", help="the hospital's key folder")
    parser.add_argument("--hospital", metavar="NAME", help="this hospital's name (the public key's comment)")
    parser.add_argument("--force", action="store_true", help="replace the key pair (the coordinator must register the new one)")
    parser.add_argument("--fingerprint", type=Path, metavar="PUB_FILE", help="print the fingerprint of a public key file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.fingerprint is not None:
            print(f"{public_key_fingerprint(args.fingerprint)}  {args.fingerprint}")
            return 0
        if args.key_dir is None or args.hospital is None:
            raise CommandError("expected KEY_DIR and --hospital NAME (or --fingerprint PUB_FILE)")
        actions = write_supernode_keys(args.key_dir, args.hospital, force=args.force)
        public = args.key_dir / PUBLIC_KEY
        print_lines = [action.describe() for action in actions]
        print_lines += [
            f"Send the coordinator {public} (public; the private key stays in {args.key_dir}):",
            public.read_text().strip(),
            f"fingerprint: {public_key_fingerprint(public)}  (confirm it with the coordinator by phone)",
        ]
    except SupernodeKeyError as error:
        raise CommandError(str(error)) from None
    print("\n".join(print_lines))
    return 0
