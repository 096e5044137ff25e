"""Flower's ``flwr-clientapp`` process, which first checks that this hospital approved the app bundle.

A SuperNode runs each message of a run in a fresh ClientApp process that installs the
run's app bundle (the coordinator's code) and imports the ClientApp from it. This module
is that process with one step added, taken from the hospital's installed package before
any of the bundle's code is imported: the bundle's content digest must be listed in the
``approved-app-digests`` of the site config the SuperNode was started with
(``--node-config 'site-config="..."'``). Otherwise the process replies with an error
naming the digest and the key, and the bundle is neither installed nor imported.

Once approved, the project's own packages this check imported are forgotten, so that
the ClientApp, its mods and everything they import load from the approved bundle, as
Flower would load them. ``client.approved_app_launcher`` starts this process for every
ClientApp task:

    python -m client.approved_clientapp --runtime-api-address ADDRESS --token TOKEN [...]
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from logging import ERROR, INFO
from typing import Any

import flwr
import flwr.supernode.runtime.run_clientapp as flower_clientapp
from flwr.common.logger import log
from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

from client.app_approval import AppNotApprovedError, check_app_approved
from client.metrics_exporter import record_failure
from client.site_config import SITE_CONFIG_KEY, SiteConfig, SiteConfigError
from segguided_federation.flower_pin import VERIFIED_FLOWER_VERSIONS

PROJECT_PACKAGES = ("segguided_model", "segguided_federation", "server", "client", "segguided_tools")
"""The project's top-level packages (``[tool.hatch.build.targets.wheel].packages``; a test keeps them equal)."""


class ApprovalCheck:
    """Remembers what the SuperNode says about the task, then refuses an unapproved bundle at install.

    Flower's ``run_clientapp`` pulls the task (message, context with the node config, run,
    bundle) and then installs the bundle; an exception raised at install time becomes an
    error reply to the server, so the refusal is reported at once rather than timing out.
    """

    def __init__(self) -> None:
        self.node_config: dict[str, Any] = {}
        self.announced_hash = ""

    def remembering(self, pull_task_input: Callable) -> Callable:
        """Wrap Flower's ``pull_task_input`` to keep the node config and the bundle's announced hash."""

        def pull(client):  # noqa: ANN001, ANN202 - Flower's own signature
            message, context, run, fab = pull_task_input(client)
            self.node_config, self.announced_hash = dict(context.node_config), fab.hash_str
            return message, context, run, fab

        return pull

    def guarding(self, install_from_fab: Callable) -> Callable:
        """Wrap Flower's ``install_from_fab`` so that only an approved bundle is installed."""

        def install(fab_content: bytes, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            try:
                digest = self.verify(fab_content)
            except AppNotApprovedError:
                self.count_refusal()
                raise
            log(INFO, "app bundle %s is approved by this hospital's site config; loading it", digest)
            forget_project_modules()
            return install_from_fab(fab_content, *args, **kwargs)

        return install

    def site_config(self) -> SiteConfig:
        """The site config named by the SuperNode's ``--node-config``.

        Raises:
            AppNotApprovedError: the node config names none, or it cannot be read (the
                details, with the file's path, go to the hospital's log only).
        """
        if SITE_CONFIG_KEY not in self.node_config:
            raise AppNotApprovedError(
                "this SuperNode's node config names no site-config, so no app bundle is approved"
            )
        try:
            return SiteConfig.load(str(self.node_config[SITE_CONFIG_KEY]))
        except SiteConfigError as error:
            log(ERROR, "%s", error)
            raise AppNotApprovedError("this hospital's site config cannot be read, so no app bundle is approved") from None

    def count_refusal(self) -> None:
        """Count the refusal in the hospital's metrics file, as the ClientApp counts its own failures."""
        try:
            site = self.site_config()
        except AppNotApprovedError:
            return
        if site.metrics_file is not None:
            record_failure(site.metrics_file, site.site_id or site.data_path.name)

    def verify(self, bundle: bytes) -> str:
        """The bundle's digest if this hospital approved it.

        Raises:
            AppNotApprovedError: no site config, an unreadable one, a bundle that is not the
                one announced, or a digest the site config does not list.
        """
        site = self.site_config()
        if hashlib.sha256(bundle).hexdigest() != self.announced_hash:
            raise AppNotApprovedError("the app bundle's content does not match the hash it was announced with")
        return check_app_approved(bundle, site.approved_app_digests)


def forget_project_modules() -> list[str]:
    """Drop the project's already imported modules, so the next import reads them from the bundle."""
    forgotten = [name for name in sys.modules if name.split(".")[0] in PROJECT_PACKAGES]
    for name in forgotten:
        del sys.modules[name]
    return forgotten


def main() -> None:
    """Run Flower's ``flwr-clientapp`` with the approval check (same command-line arguments)."""
    if flwr.__version__ not in VERIFIED_FLOWER_VERSIONS:  # the hooks below wrap Flower's own functions
        sys.exit(f"client.approved_clientapp is verified against flwr {', '.join(VERIFIED_FLOWER_VERSIONS)}, "
                 f"but flwr {flwr.__version__} is installed")
    check = ApprovalCheck()
    flower_clientapp.pull_task_input = check.remembering(flower_clientapp.pull_task_input)
    flower_clientapp.install_from_fab = check.guarding(flower_clientapp.install_from_fab)
    flwr_clientapp()


if __name__ == "__main__":
    main()
