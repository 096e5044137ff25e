"""Mask generator: the stock 32-bit seed fold collides; ours is keyed by the whole seed."""

from __future__ import annotations

import os

import numpy as np
import pytest
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

from segguided_federation.secure_masks import mask_words


def _colliding_pair() -> tuple[bytes, bytes]:
    """Two different 32-byte seeds whose 4-byte words XOR to the same 32-bit value."""
    seed = os.urandom(32)
    flip = os.urandom(4)
    twisted = bytearray(seed)
    for offset in (0, 4):  # XOR the same value into two words: their XOR is unchanged
        twisted[offset : offset + 4] = bytes(a ^ b for a, b in zip(seed[offset : offset + 4], flip))
    return seed, bytes(twisted)


def test_stock_flower_masks_collide_for_different_seeds():
    seed, other = _colliding_pair()
    assert seed != other
    stock = pseudo_rand_gen(seed, 2**32, [(1000,)])[0]
    stock_other = pseudo_rand_gen(other, 2**32, [(1000,)])[0]
    np.testing.assert_array_equal(stock, stock_other)


def test_our_masks_differ_for_those_seeds():
    seed, other = _colliding_pair()
    assert np.mean(mask_words(seed, 1000) == mask_words(other, 1000)) < 0.01


def test_every_byte_of_the_seed_changes_the_mask():
    seed = os.urandom(32)
    reference = mask_words(seed, 64)
    for index in range(len(seed)):
        changed = bytearray(seed)
        changed[index] ^= 0x01
        assert not np.array_equal(mask_words(bytes(changed), 64), reference)


def test_same_seed_gives_the_same_mask_and_prefixes_agree():
    seed = os.urandom(44)  # Flower's pairwise keys are 44 bytes
    np.testing.assert_array_equal(mask_words(seed, 100), mask_words(seed, 100))
    np.testing.assert_array_equal(mask_words(seed, 100)[:10], mask_words(seed, 10))


def test_masks_look_uniform_over_32_bits():
    words = mask_words(os.urandom(32), 200_000).astype(np.float64)
    assert words.dtype == np.float64
    assert abs(words.mean() / 2**32 - 0.5) < 0.005
    counts = np.bincount((words // 2**28).astype(int), minlength=16)
    assert counts.min() > 0.9 * 200_000 / 16


@pytest.mark.parametrize("seed, length", [(b"short", 4), (os.urandom(32), -1)])
def test_ill_arguments_are_named(seed, length):
    with pytest.raises(ValueError, match="seed|length"):
        mask_words(seed, length)
