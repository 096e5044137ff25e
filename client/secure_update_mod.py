"""The client side of secure aggregation: what a hospital uploads, masked, in place of its weights.

``secure_update_mod`` is a Flower client mod. It follows Flower's SecAgg+ stages (key
pairs, Shamir shares of its secrets, unmasking shares) and, in the training stage, turns
the site's ``fit`` result into one masked uint32 vector:

1. ``Δ = local weights − global weights`` (the global model came with the instructions);
   under DP, ``Δ`` is clipped to L2 norm ``dp-clipping-norm`` and weighted 1;
2. ``encode`` (``segguided_federation/secure_encoding.py``): ``[w, w·metrics, w·round(Δ·S)]`` with ``w``
   the number of training cases; a value outside the agreed range raises
   ``SecureRangeError`` (the round counts this client as failed, with the reason) instead of
   being clipped;
3. plus its own AES-CTR mask and ± one pairwise mask per neighbour, modulo 2**32.

The plaintext weights, case count and metrics never leave: the reply carries only the
masked vector. Messages without SecAgg+ configs (federated evaluation, or a run with
``secure-aggregation=false``) pass through, except that a hospital refuses a plain
training request unless its own site config sets ``allow-plain-training=true``
(``client.site_config.plain_training_allowed``; a simulation's node, which has no site
config, follows the run config).
"""

from __future__ import annotations

import logging
from typing import cast

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.client.mod.secure_aggregation.secaggplus_mod import (
    SecAggPlusState,
    _setup,
    _share_keys,
    _unmask,
    check_configs,
    check_stage,
)
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import (
    Code,
    FitRes,
    Parameters,
    Status,
    ndarray_to_bytes,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    decrypt,
    generate_shared_key,
)
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)
from flwr.common.secure_aggregation.secaggplus_utils import (
    share_keys_plaintext_separate,
)
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
)

from client.site_config import plain_training_allowed
from segguided_federation.differential_privacy import clip_update
from segguided_federation.flower_pin import require_verified_flower
from segguided_federation.run_config import RunConfig
from segguided_federation.secure_encoding import FixedPointCodec, carried_metric_keys
from segguided_federation.secure_masks import mask_words

log = logging.getLogger(__name__)


class PlainTrainingRefused(RuntimeError):
    """This hospital was asked to upload plain weights and its site config does not allow it."""


def secure_update_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Handle one SecAgg+ stage; pass every other message on unchanged."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, ctxt)
    if RECORD_KEY_CONFIGS not in msg.content.config_records:
        if not plain_training_allowed(ctxt.node_config):
            raise PlainTrainingRefused(
                "plain training (without secure aggregation) refused: this hospital's site config does not set "
                "allow-plain-training=true (run config secure-aggregation=false?)"
            )
        return call_next(msg, ctxt)

    if RECORD_KEY_STATE not in ctxt.state.config_records:
        ctxt.state.config_records[RECORD_KEY_STATE] = ConfigRecord({})
    state = SecAggPlusState(**ctxt.state.config_records[RECORD_KEY_STATE])
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    check_stage(state.current_stage, configs)
    state.current_stage = cast(str, configs.pop(Key.STAGE))
    check_configs(state.current_stage, configs)

    out_content = RecordDict()
    if state.current_stage == Stage.SETUP:
        require_verified_flower()
        state.nid = msg.metadata.dst_node_id
        result = _setup(state, configs)
    elif state.current_stage == Stage.SHARE_KEYS:
        result = _share_keys(state, configs)
    elif state.current_stage == Stage.COLLECT_MASKED_VECTORS:
        global_arrays = parameters_to_ndarrays(compat.recorddict_to_fitins(msg.content, keep_input=True).parameters)
        fitres = compat.recorddict_to_fitres(call_next(msg, ctxt).content, keep_input=False)
        if fitres.status.code != Code.OK:
            raise RuntimeError(f"local training failed: {fitres.status.message}")
        vector = masked_update(state, configs, global_arrays, fitres, RunConfig.from_flower(ctxt.run_config))
        # Only the masked vector leaves: no weights, case count or per-site metrics.
        out_content = compat.fitres_to_recorddict(
            FitRes(Status(Code.OK, "masked"), Parameters(tensors=[], tensor_type=""), 0, {}), keep_input=False
        )
        result = {Key.MASKED_PARAMETERS: [ndarray_to_bytes(vector)]}
    elif state.current_stage == Stage.UNMASK:
        result = _unmask(state, configs)
    else:
        raise ValueError(f"unknown SecAgg+ stage {state.current_stage!r}")

    ctxt.state.config_records[RECORD_KEY_STATE] = ConfigRecord(state.to_dict())
    out_content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(result, False)
    return Message(out_content, reply_to=msg)


def masked_update(
    state: SecAggPlusState,
    configs: ConfigRecord,
    global_arrays: list[np.ndarray],
    fitres: FitRes,
    config: RunConfig,
) -> np.ndarray:
    """This client's encoded update plus its own and its pairwise masks.

    Args:
        state: the SecAgg+ state after key sharing (keys, own mask seed, round settings).
        configs: the stage's forwarded ciphertexts (neighbours' shares) and their sources.
        global_arrays: the global model the round started from.
        fitres: the local ``fit`` result (full weights, number of training cases, metrics).
        config: the run config (differential privacy settings).

    Returns:
        ``(L,)`` uint32 vector with ``L = 1 + metrics + number of weights``.

    Raises:
        SecureRangeError: a value outside the agreed encoding range (names the key to change).
        ValueError: a forwarded share is addressed to another node or comes from another source.
    """
    sources = cast(list[int], configs[Key.SOURCE_LIST])
    ciphertexts = cast(list[bytes], configs[Key.CIPHERTEXT_LIST])
    if len(ciphertexts) + 1 < state.threshold:
        raise ValueError(f"only {len(ciphertexts) + 1} key holders, fewer than the threshold {state.threshold}")
    for source, ciphertext in zip(sources, ciphertexts, strict=True):
        actual_source, destination, seed_share, key_share = share_keys_plaintext_separate(
            decrypt(state.ss2_dict[source], ciphertext)
        )
        if actual_source != source or destination != state.nid:
            raise ValueError(
                f"node {state.nid}: share from {actual_source} to {destination} was forwarded as from {source}"
            )
        state.rd_seed_share_dict[source] = seed_share
        state.sk1_share_dict[source] = key_share

    local_arrays = parameters_to_ndarrays(fitres.parameters)
    if len(local_arrays) != len(global_arrays):
        raise ValueError(f"fit returned {len(local_arrays)} weight arrays for a model of {len(global_arrays)}")
    updates = [np.subtract(local, glob, dtype=np.float64) for local, glob in zip(local_arrays, global_arrays)]
    weight = int(fitres.num_examples)
    if config.differential_privacy:
        updates, norm = clip_update(updates, config.dp_clipping_norm)
        if norm > config.dp_clipping_norm:
            log.info("update norm %.4g clipped to dp-clipping-norm=%g", norm, config.dp_clipping_norm)
        weight = 1
    codec = FixedPointCodec(
        clients=state.sample_num,
        max_weight=int(state.max_weight),
        clipping_range=state.clipping_range,
        metric_keys=carried_metric_keys(config.differential_privacy),
    )
    vector = codec.encode(updates, weight, fitres.metrics)
    vector += mask_words(state.rd_seed, vector.size)
    own_key = bytes_to_private_key(state.sk1)
    for neighbour in sources:
        pairwise = mask_words(
            generate_shared_key(own_key, bytes_to_public_key(state.public_keys_dict[neighbour][0])), vector.size
        )
        if state.nid > neighbour:
            vector += pairwise
        else:
            vector -= pairwise
    return vector
