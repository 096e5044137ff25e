"""A hospital's settings file (TOML), validated once and turned into the SuperNode's node config.

A hospital writes one file and points both of its processes at it: the SuperNode
(``--node-config 'site-config="/etc/segguided/site.toml"'``) and the client metrics
exporter (``python -m client.metrics_exporter --site-config /etc/segguided/site.toml``).
Keys are kebab-case; relative paths are relative to the file::

    site-id = "hospital-a"
    data-path = "/data/brats"
    cache-dir = "/var/cache/segguided"
    metrics-file = "/var/lib/segguided/client-metrics.json"
    metrics-port = 9401
    metrics-host = "127.0.0.1"
    label-convention = "brats2023"   # optional: declare what the label values mean
    allow-plain-training = false     # default: refuse training without secure aggregation
    share-evaluation-metrics = false # default: keep this site's federated-evaluation metrics
    approved-app-digests = ["sha256:..."]  # app bundles this hospital reviewed (segguided app-digest)
    # This hospital's rules for secure aggregation (client/secure_policy.py):
    secure-aggregation-identity-key = "/etc/segguided/supernode.key"
    secure-aggregation-roster = "/etc/segguided/roster.pub"
    secure-aggregation-min-clients = 3
    secure-aggregation-lowest-max-cases = 1000
    secure-aggregation-lowest-clipping-range = 1.0

Without ``label-convention`` the QA gate decides the site's convention once from all its
labels and rejects every labelled case when they disagree (``label-convention-undecided``).

The ``secure-aggregation-*`` keys come from ``SecureAggregationPolicy`` and reach the
ClientApp through the node config, so they are the hospital's and never the server's;
only those the file sets are passed on (the policy's defaults apply to the rest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Mapping

from pydantic import Field, ValidationError, field_validator

from client.app_approval import APP_DIGEST_PATTERN
from client.secure_policy import SecureAggregationPolicy
from segguided_federation.config_model import (
    describe_validation_error,
    kebab_case,
    read_toml_file,
)
from segguided_federation.metric_keys import SITE_ID_PATTERN

SITE_CONFIG_KEY = "site-config"
ALLOW_PLAIN_TRAINING = "allow-plain-training"
SHARE_EVALUATION_METRICS = "share-evaluation-metrics"
# Node-config keys the site loader and the client read; a site config file provides them.
NODE_CONFIG_KEYS = (
    "site-id", "data-path", "cache-dir", "metrics-file", "label-convention", ALLOW_PLAIN_TRAINING, SHARE_EVALUATION_METRICS,
    *SecureAggregationPolicy.keys(),
)


class SiteConfigError(ValueError):
    """The site config file is missing or invalid; the message names the file and the key."""


PATH_FIELDS = ("data_path", "cache_dir", "metrics_file", "secure_aggregation_identity_key", "secure_aggregation_roster")
"""Settings that name files; relative ones are resolved against the site config's folder."""


class SiteConfig(SecureAggregationPolicy):
    """One hospital's deployment settings: its secure-aggregation policy plus the fields below.

    Attributes:
        site_id: the name this site reports under (never a path or patient data); default: the data folder's name.
        data_path: the site's data folder (BraTS 2021/2023 or MSD layout).
        cache_dir: where preprocessed volumes may be cached; none by default.
        metrics_file: where the ClientApp records its last round for the metrics exporter.
        metrics_port: the client metrics exporter's port; 0 = no exporter.
        metrics_host: the address the exporter binds.
        label_convention: what the site's label values mean (``brats2021``, ``brats2023``,
            ``brats2024``, ``msd``); none by default: the QA gate decides it once from all
            the site's labels, and rejects every labelled case when they disagree.
        secure_aggregation_*: see ``SecureAggregationPolicy``.
        allow_plain_training: accept training requests without secure aggregation (the
            server would see this site's weights, case count and losses); off by default.
        share_evaluation_metrics: send this site's federated-evaluation metrics (case count,
            Dice, HD95) to the server in plaintext; off by default, and never under DP.
        approved_app_digests: the app bundles (``sha256:`` content digests, ``segguided
            app-digest``) this hospital reviewed; its ClientApp launcher refuses any other.
    """

    site_id: str | None = Field(None, pattern=f"^{SITE_ID_PATTERN.pattern}$")
    data_path: Path
    cache_dir: Path | None = None
    metrics_file: Path | None = None
    metrics_port: int = Field(0, ge=0, le=65535)
    metrics_host: str = Field("127.0.0.1", min_length=1)

    # Data conventions (issue 16) -----------------------------------------------------------
    label_convention: str | None = None

    # What leaves the hospital, and what code it runs (issue 13) ---------------------------
    allow_plain_training: bool = False
    share_evaluation_metrics: bool = False
    approved_app_digests: tuple[Annotated[str, Field(pattern=APP_DIGEST_PATTERN)], ...] = ()

    @field_validator("label_convention")
    @classmethod
    def _known_convention(cls, value: str | None) -> str | None:
        if value is not None:
            # Imported here: the labels module needs torch, which the metrics exporter
            # (it reads this file too) should not load unless the key is set.
            from segguided_model.labels import get_convention

            get_convention(value)  # ValueError naming the value and the known conventions
        return value

    @classmethod
    def load(cls, path: Path) -> "SiteConfig":
        """Read and validate a site config file; relative paths are resolved against its folder.

        Raises:
            SiteConfigError: the file cannot be read, is not TOML, or has a bad or unknown key.
        """
        path = Path(path).expanduser()
        try:
            data = read_toml_file(path)
        except ValueError as error:
            raise SiteConfigError(f"site config {path}: {error}") from None
        return cls.from_mapping(data, source=str(path), base=path.parent)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str, base: Path | None = None) -> "SiteConfig":
        """Validate a kebab-case mapping; ``source`` names it in errors."""
        try:
            config = cls.model_validate(dict(data))
        except ValidationError as error:
            raise SiteConfigError(f"site config {source}: " + describe_validation_error(error, "site config", cls)) from None
        if base is None:
            return config
        resolved = {
            name: (base / value).resolve()
            for name in PATH_FIELDS
            if isinstance(value := getattr(config, name), Path) and not value.expanduser().is_absolute()
        }
        return config.model_copy(update=resolved)

    def node_config(self) -> dict[str, str | bool | int | float]:
        """The node-config keys the ClientApp reads (``data-path``, ``site-id``, the privacy settings, the policy keys the file sets, ...)."""
        values = {
            "site-id": self.site_id,
            "data-path": self.data_path,
            "cache-dir": self.cache_dir,
            "metrics-file": self.metrics_file,
            "label-convention": self.label_convention,
            ALLOW_PLAIN_TRAINING: self.allow_plain_training,
            SHARE_EVALUATION_METRICS: self.share_evaluation_metrics,
        }
        policy_fields = set(SecureAggregationPolicy.model_fields) & self.model_fields_set
        values.update({kebab_case(key): getattr(self, key) for key in sorted(policy_fields)})
        return {key: str(Path(value).expanduser()) if isinstance(value, Path) else value
                for key, value in values.items() if value is not None}


def resolve_node_config(node_config: Mapping[str, Any]) -> dict[str, Any]:
    """The SuperNode's node config with its ``site-config`` file expanded.

    Keys given directly in ``--node-config`` win over the file's, so one file can serve
    several SuperNodes that differ only in, say, ``site-id``.
    """
    resolved = dict(node_config)
    if SITE_CONFIG_KEY not in resolved:
        return resolved
    from_file = SiteConfig.load(Path(str(resolved.pop(SITE_CONFIG_KEY)))).node_config()
    return {**from_file, **resolved}


def _is_true(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes")


def _hospital_setting(node_config: Mapping[str, Any], key: str) -> bool:
    """A yes/no setting of a hospital, which only its own site config or ``--node-config`` can turn on.

    A node whose node config names a site config is a hospital: the setting is off unless
    it says otherwise. A node without one (a simulation's virtual SuperNode) has no such
    setting, and the run config decides.
    """
    resolved = resolve_node_config(node_config)
    if key in resolved:
        return _is_true(resolved[key])
    return SITE_CONFIG_KEY not in node_config


def plain_training_allowed(node_config: Mapping[str, Any]) -> bool:
    """Whether this node accepts a training request without secure aggregation (``allow-plain-training``)."""
    return _hospital_setting(node_config, ALLOW_PLAIN_TRAINING)


def evaluation_metrics_shared(node_config: Mapping[str, Any]) -> bool:
    """Whether this node sends its federated-evaluation metrics to the server (``share-evaluation-metrics``)."""
    return _hospital_setting(node_config, SHARE_EVALUATION_METRICS)
