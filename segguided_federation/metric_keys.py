"""The keys the ClientApp reports and the ServerApp reads: the contract between the two apps.

Flower carries a client's results as a flat ``{key: scalar}`` dictionary next to its
weights, and the server's instructions as one too. Both sides name the keys from here.

**Instructions** (the server adds them to every ``fit`` and ``evaluate`` config):

* ``server-round`` (int): the true round number, counted across resumes.
* ``seed`` (int): the run's seed; the client seeds its round with ``round_seed``.
* ``proximal_mu`` (float): added by Flower's ``FedProx`` itself (Flower's spelling).

**Training results** (``fit``), one set per site and round. Under secure aggregation
none of them leaves the site: only ``TRAINING_LOSS_KEYS`` travel, case-weighted, inside
the masked sum, and the server learns their mean over the survivors.

* ``site-id`` (str): the name the site reports under (never a path or patient data).
* ``train-cases`` (int): training cases, also the FedAvg weight (``num_examples``).
* ``rejected-cases`` (int): cases the QA gate skipped.
* ``loss``, ``segmentation-loss``, ``attention-loss`` (float): mean over the round's steps.
* ``steps`` (int), ``steps-per-second`` (float), ``train-seconds`` (s): local optimisation.
* ``data-seconds`` (s): the part of ``train-seconds`` spent waiting for batches.
* ``qa-seconds`` (s): finding the site's cases and the QA gate.
* ``client-seconds`` (s): the whole ``fit`` call, data loading and QA included.
* ``device-memory-peak-bytes`` (int, CUDA only): peak allocated device memory.

**Evaluation results** (``evaluate``): ``site-id``, ``cases`` (validation cases, also
the weight of the site's mean), the summary metrics of ``segguided_model.metrics``
(``SUMMARY_KEYS``: Dice and HD95 in mm per region and their means), for a gated
network the attention maps' scores (``attention_scores.ATTENTION_KEYS``), ``qa-seconds`` and
``client-seconds``, sent only by a hospital whose site config sets
``share-evaluation-metrics=true`` and never under differential privacy. Every other site
answers ``evaluation-withheld`` (1) with weight 0 and nothing else; the server then records
no per-site figures for it.
"""

from __future__ import annotations

import re

from segguided_model.metrics import SUMMARY_KEYS

# Instructions
SERVER_ROUND = "server-round"
RUN_SEED = "seed"
PROXIMAL_MU = "proximal_mu"

# Training results
SITE_ID = "site-id"
SITE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
SITE_ID_RULE = "1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
"""``SITE_ID_PATTERN`` in words, for error messages."""
"""What a site id may be (``fullmatch``): a site config's ``site-id`` must match it, a default taken from
a data folder's name is made to, and the server refuses a reply claiming any other (so that no claim can
look like the ``"<site> (node <id>)"`` rows it writes for an id claimed twice)."""
TRAIN_CASES = "train-cases"
REJECTED_CASES = "rejected-cases"
LOSS = "loss"
SEGMENTATION_LOSS = "segmentation-loss"
ATTENTION_LOSS = "attention-loss"
STEPS = "steps"
STEPS_PER_SECOND = "steps-per-second"
TRAIN_SECONDS = "train-seconds"
DATA_SECONDS = "data-seconds"
QA_SECONDS = "qa-seconds"
CLIENT_SECONDS = "client-seconds"
DEVICE_MEMORY_PEAK_BYTES = "device-memory-peak-bytes"

TRAINING_LOSS_KEYS: tuple[str, ...] = (LOSS, SEGMENTATION_LOSS, ATTENTION_LOSS)
"""Training metrics every client carries, case-weighted, inside its masked vector."""

FIT_METRIC_KEYS: tuple[str, ...] = (
    SITE_ID, TRAIN_CASES, REJECTED_CASES, *TRAINING_LOSS_KEYS, STEPS, STEPS_PER_SECOND, TRAIN_SECONDS, DATA_SECONDS,
    QA_SECONDS, CLIENT_SECONDS,
)
"""Keys of every plain ``fit`` result (``DEVICE_MEMORY_PEAK_BYTES`` is added on CUDA)."""

# Evaluation results
EVALUATION_CASES = "cases"
EVALUATION_WITHHELD = "evaluation-withheld"

EVALUATE_METRIC_KEYS: tuple[str, ...] = (SITE_ID, EVALUATION_CASES, *SUMMARY_KEYS, QA_SECONDS, CLIENT_SECONDS)
"""Keys of every ``evaluate`` result of a site with validation cases."""
