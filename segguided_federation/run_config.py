"""The run configuration: ``[tool.flwr.app.config]`` parsed once into a validated model.

Every key a person can set with ``--run-config`` is a field here, spelled in kebab-case on
the wire. Nothing below the app layer sees the raw dictionary: the ServerApp and the
ClientApp both call ``RunConfig.from_flower`` and pass the typed object down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import (
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from segguided_federation.config_model import KebabModel, describe_validation_error
from segguided_model.inference import SlidingWindow
from segguided_model.labels import CONVENTIONS
from segguided_model.network import ModelConfig


class RunConfigError(ValueError):
    """The run configuration is invalid; the message names each bad key."""


def _positive_integer_parts(value: str) -> list[str] | None:
    """The stripped parts of a comma-separated list if each is a positive integer, else None."""
    parts = [part.strip() for part in str(value).split(",")]
    return parts if all(part.isdigit() and int(part) > 0 for part in parts) else None


class RunConfig(KebabModel):
    """Everything that defines one federated run.

    Sizes are voxels; ``patch-size`` is written as one edge of a cube or ``"D,H,W"`` and
    read as ``patch_size``, a ``(D, H, W)`` tuple.
    """

    # Federation
    num_server_rounds: int = Field(5, ge=1)
    fraction_fit: float = Field(1.0, gt=0.0, le=1.0)
    min_fit_clients: int = Field(2, ge=1, description="a round aggregates only if at least this many clients succeed")
    min_evaluate_clients: int = Field(2, ge=1, description="federated evaluation waits for at least this many clients")
    min_available_clients: int = Field(2, ge=1)
    client_wait_timeout: float = Field(
        300.0, gt=0.0, description="seconds to wait for min-available-clients SuperNodes before the run fails"
    )
    reply_timeout: float = Field(
        1800.0, gt=0.0,
        description="seconds to wait for the sites' replies in plain training and in federated evaluation; "
        "a site that has not answered by then fails the round (longer than local training)",
    )
    fraction_evaluate: float = Field(1.0, ge=0.0, le=1.0, description="0 disables federated evaluation")
    evaluate_every: int = Field(
        1, ge=1, description="central validation and federated evaluation after every k-th round and the last"
    )
    strategy: Literal["fedavg", "fedprox", "fedadam", "fedyogi"] = "fedavg"
    proximal_mu: float = Field(0.01, ge=0.0, description="FedProx proximal weight")
    server_learning_rate: float = Field(0.01, gt=0.0, description="FedAdam/FedYogi server step size")
    server_tau: float = Field(1e-3, gt=0.0, description="FedAdam/FedYogi adaptivity")

    # Secure aggregation (SecAgg+) and central differential privacy
    secure_aggregation: bool = Field(True, description="the server sees only the sum of the clients' updates")
    secure_aggregation_num_shares: float = Field(
        1.0, gt=0.0, le=1.0, description="fraction of the round's clients each client shares its keys with"
    )
    secure_aggregation_reconstruction_threshold: float = Field(
        0.6, gt=0.0, le=1.0, description="fraction of those shares needed to unmask (at least a majority)"
    )
    secure_aggregation_timeout: float = Field(
        1800.0, gt=0.0, description="seconds to wait for replies in each stage (longer than local training)"
    )
    secure_aggregation_clipping_range: float = Field(
        1.0, gt=0.0, description="largest |local - global| of one weight in one round; beyond it a client fails"
    )
    secure_aggregation_max_cases: int = Field(1000, ge=1, description="largest number of training cases of one site")
    differential_privacy: bool = Field(False, description="clip each update and add Gaussian noise to the sum")
    dp_noise_multiplier: float = Field(1.0, gt=0.0, description="noise std on the sum / dp-clipping-norm")
    dp_clipping_norm: float = Field(1.0, gt=0.0, description="largest L2 norm of one client's update")
    dp_delta: float = Field(1e-5, gt=0.0, lt=1.0, description="delta at which epsilon is reported")

    # Local training
    local_epochs: int = Field(0, ge=0, description="epochs per round; 0 means use local-steps")
    local_steps: int = Field(25, ge=1)
    batch_size: int = Field(2, ge=1)
    patch_size: tuple[int, int, int] = Field((48, 48, 48), description="training patch, one edge or 'D,H,W'")
    learning_rate: float = Field(2e-3, gt=0.0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(1e-5, ge=0.0)
    attention_weight: float = Field(0.1, ge=0.0, description="lambda of the attention-supervision loss")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision: Literal["auto", "on", "off"] = "auto"
    data_loader_workers: int = Field(0, ge=0)

    # Validation (central and federated): sliding windows over each case's brain
    validation_roi_size: int = Field(
        256, ge=8, description="window edge in voxels (capped at the brain's box: 256 is one window over any BraTS brain)"
    )
    validation_overlap: float = Field(0.25, ge=0.0, lt=1.0, description="overlap of neighbouring windows")
    inference_memory_mb: float = Field(
        2048.0,
        gt=0.0,
        description="activation memory (MiB) for one forward pass: bounds the window, then how many run together",
    )

    # Model
    model_base_width: int = Field(8, ge=1)
    model_levels: int = Field(4, ge=2)
    model_encoder_blocks: str = Field(
        "", description="residual blocks per encoder level, 'n1,n2,...'; empty = the network's default (1, 2, 2, 4, ...)"
    )
    model_skip_merge: Literal["add", "concat"] = "add"
    model_upsample: Literal["trilinear", "transposed"] = Field(
        "trilinear", description="decoder upsampling; 'transposed' (kernel 2, stride 2) leaves a checkerboard"
    )
    model_gate_hidden_channels: int = Field(
        8, ge=0, description="hidden channels through which the attention gates read their maps; 0 = a linear read-out"
    )
    deep_supervision: bool = False

    # Data
    data_dir: str = Field("", description="site data (deployment: per-node data-path wins); empty = synthetic data")
    synthetic_sites: int = Field(3, ge=1)
    synthetic_cases_per_site: int = Field(16, ge=2)
    synthetic_validation_cases: int = Field(8, ge=1)
    synthetic_size: int = Field(
        48, ge=24, description="voxels along the largest axis of the BraTS field of view: 48 = 5 mm, 240 = BraTS's 1 mm"
    )
    validation_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    server_validation_dir: str = Field("", description="central validation cases; empty = the synthetic held-out set")
    server_validation_convention: str = Field(
        "", description="label convention of server-validation-dir; empty = decided once from all its labels"
    )

    # Outputs
    output_dir: str = "runs"
    run_name: str = Field("", description="folder under output-dir; empty = a new timestamped name")
    resume: bool = False
    overwrite: bool = Field(
        False, description="start this run afresh in a run folder that already holds one, replacing its files"
    )
    keep_round_checkpoints: int = Field(2, ge=0, description="0 keeps every round's checkpoint")
    seed: int = 0

    # Monitoring
    metrics_port: int = Field(0, ge=0, le=65535, description="ServerApp Prometheus endpoint; 0 = off")
    metrics_host: str = Field("127.0.0.1", min_length=1, description="address the metrics endpoint binds")

    @field_validator("patch_size", mode="before")
    @classmethod
    def _patch_size_is_cube_or_triple(cls, value: Any) -> tuple[int, int, int]:
        if isinstance(value, (tuple, list)):
            value = ",".join(str(part) for part in value)
        parts = _positive_integer_parts(value)
        if parts is None or len(parts) not in (1, 3):
            raise ValueError(f"expected one positive integer or 'D,H,W', got {value!r}")
        sizes = [int(part) for part in parts]
        return (sizes[0],) * 3 if len(sizes) == 1 else (sizes[0], sizes[1], sizes[2])

    @field_serializer("patch_size")
    def _patch_size_as_written(self, value: tuple[int, int, int]) -> str:
        return str(value[0]) if len(set(value)) == 1 else ",".join(str(size) for size in value)

    @field_validator("model_encoder_blocks")
    @classmethod
    def _encoder_blocks_are_positive_counts(cls, value: str) -> str:
        if not str(value).strip():
            return ""
        parts = _positive_integer_parts(value)
        if parts is None:
            raise ValueError(f"expected comma-separated positive block counts such as '1,2,2,4', got {value!r}")
        return ",".join(parts)

    @field_validator("server_validation_convention")
    @classmethod
    def _known_convention(cls, value: str) -> str:
        if value and value not in CONVENTIONS:
            raise ValueError(f"unknown label convention {value!r}; expected '' or one of {sorted(CONVENTIONS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "RunConfig":
        for key, value in (("min-fit-clients", self.min_fit_clients), ("min-evaluate-clients", self.min_evaluate_clients)):
            if value > self.min_available_clients:
                raise ValueError(f"{key} ({value}) exceeds min-available-clients ({self.min_available_clients})")
        if self.differential_privacy and not self.secure_aggregation:
            raise ValueError("differential-privacy=true needs secure-aggregation=true")
        if self.differential_privacy and self.fraction_fit != 1.0:
            # Flower samples max(int(N·f), min-fit-clients) clients without replacement: not the
            # Poisson rate f the accountant's amplification bound assumes (differential_privacy.py).
            raise ValueError(
                f"differential-privacy=true needs fraction-fit=1 (every hospital in every round), got {self.fraction_fit}"
            )
        if self.secure_aggregation and self.min_fit_clients < 2:
            raise ValueError(f"secure-aggregation needs min-fit-clients >= 2, got {self.min_fit_clients}")
        divisor = 2 ** (self.model_levels - 1)
        bad = [size for size in self.patch_size if size % divisor]
        if bad:
            raise ValueError(
                f"patch-size {self._patch_size_as_written(self.patch_size)} does not fit model-levels={self.model_levels}: "
                f"every edge must be a multiple of {divisor}"
            )
        blocks = self.encoder_blocks
        if blocks is not None and len(blocks) != self.model_levels:
            raise ValueError(
                f"model-encoder-blocks {self.model_encoder_blocks!r} has {len(blocks)} entries; "
                f"model-levels={self.model_levels} needs one per level"
            )
        return self

    @property
    def encoder_blocks(self) -> tuple[int, ...] | None:
        """``model-encoder-blocks`` as counts, or None for the network's default schedule."""
        return tuple(int(p) for p in self.model_encoder_blocks.split(",")) if self.model_encoder_blocks else None

    @property
    def model(self) -> ModelConfig:
        return ModelConfig(
            base_width=self.model_base_width,
            levels=self.model_levels,
            encoder_blocks=self.encoder_blocks,
            skip_merge=self.model_skip_merge,
            upsample=self.model_upsample,
            attention_gates=True,
            gate_hidden_channels=self.model_gate_hidden_channels,
            deep_supervision=self.deep_supervision,
        )

    def validates_after(self, number: int) -> bool:
        """Whether round ``number`` ends with central validation and federated evaluation.

        Round 0 (the initial model), every ``evaluate-every``-th round and the last round do;
        the others only aggregate and write their checkpoint.
        """
        return number == 0 or number % self.evaluate_every == 0 or number >= self.num_server_rounds

    def validation_window(self, mixed_precision: bool) -> SlidingWindow:
        """How central validation and federated evaluation cover a case with windows (never smaller than ``patch-size``)."""
        return SlidingWindow(
            roi_size=self.validation_roi_size,
            overlap=self.validation_overlap,
            memory_mb=self.inference_memory_mb,
            amp=mixed_precision,
            min_size=self.patch_size,
        )

    @property
    def uses_synthetic_data(self) -> bool:
        return not self.data_dir

    def synthetic_root(self) -> Path:
        """Where the synthetic federation for these settings lives (shared by server and clients)."""
        return default_cache_dir() / (
            f"synthetic-{self.synthetic_sites}x{self.synthetic_cases_per_site}"
            f"-v{self.synthetic_validation_cases}-{self.synthetic_size}-seed{self.seed}"
        )

    def to_flower(self) -> dict[str, Any]:
        """The kebab-case dictionary, as written in ``pyproject.toml``."""
        return self.model_dump(by_alias=True)

    @classmethod
    def from_flower(cls, run_config: Mapping[str, Any]) -> "RunConfig":
        """Parse Flower's run config; raise ``RunConfigError`` naming every bad key."""
        try:
            return cls.model_validate(dict(run_config))
        except ValidationError as error:
            raise RunConfigError("invalid run config: " + describe_validation_error(error, "run config", cls)) from None


def default_cache_dir() -> Path:
    """``$SEGGUIDED_CACHE`` or ``$XDG_CACHE_HOME/segguided-fl`` (``~/.cache/segguided-fl``)."""
    if explicit := os.environ.get("SEGGUIDED_CACHE"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "segguided-fl"
