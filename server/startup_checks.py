"""What a run can check before its first round: the data folders it names and the SuperNodes it needs.

A mistake found here fails the run within seconds, with a message naming the run-config
key, instead of every client failing every round.
"""

from __future__ import annotations

from pathlib import Path

from segguided_federation.run_config import RunConfig
from segguided_federation.site_data import simulation_site_folders


class StartupCheckError(ValueError):
    """The run's configuration cannot work; the message names the key and what to change."""


def check_data_folders(config: RunConfig) -> None:
    """``data-dir`` (simulation) and ``server-validation-dir`` exist, and ``data-dir`` holds site folders.

    Raises:
        StartupCheckError: a folder is missing, or ``data-dir`` holds no site folder.
    """
    for key, value in (("server-validation-dir", config.server_validation_dir), ("data-dir", config.data_dir)):
        if value and not Path(value).expanduser().is_dir():
            raise StartupCheckError(f"{key} {value} does not exist or is not a folder")
    if config.data_dir and not simulation_site_folders(Path(config.data_dir).expanduser()):
        raise StartupCheckError(
            f"data-dir {config.data_dir} holds no site folder (expected one folder per site, e.g. site-1/, site-2/)"
        )


def check_federation_size(config: RunConfig, supernodes: int) -> None:
    """The connected SuperNodes fit the data: one site folder or synthetic site per SuperNode.

    Only for simulations, where the server sees the same data folders as the clients:
    ``data-dir`` set, or a purely synthetic run (no ``server-validation-dir`` either).

    Raises:
        StartupCheckError: more SuperNodes than sites in ``data-dir``, or a synthetic
            federation of another size than ``synthetic-sites``.
    """
    if config.data_dir:
        sites = len(simulation_site_folders(Path(config.data_dir).expanduser()))
        if supernodes > sites:
            raise StartupCheckError(
                f"data-dir {config.data_dir} holds {sites} site folder(s) but {supernodes} SuperNodes are "
                "connected; each SuperNode trains one site folder (simulation: lower num-supernodes)"
            )
    elif not config.server_validation_dir and supernodes != config.synthetic_sites:
        raise StartupCheckError(
            f"synthetic-sites={config.synthetic_sites} but {supernodes} SuperNodes are connected; pass "
            f'--run-config "synthetic-sites={supernodes}" or --federation-config "num-supernodes='
            f'{config.synthetic_sites}"'
        )
