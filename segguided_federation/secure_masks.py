"""Cryptographic masks for secure aggregation: AES-256-CTR keyed by the full mask seed.

Flower 1.42's SecAgg+ folds each 32-byte seed into 32 bits for NumPy's Mersenne Twister
(``pseudo_rand_gen``): seeds whose 4-byte words XOR to the same value give the same mask,
and a mask can be recovered by searching 2**32 seeds. Here every bit of the seed keys the
stream: the AES key is SHA-256 over a domain label and the whole seed, so distinct seeds
give independent masks and guessing one costs a search of the seed itself.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

DOMAIN = b"segguided-fl/secure-aggregation/mask/v1"
WORD_BYTES = 4


def mask_words(seed: bytes, length: int) -> np.ndarray:
    """A pseudo-random mask of ``length`` words, uniform over ``[0, 2**32)``.

    Args:
        seed: the secret the mask is derived from (a private mask seed or a pairwise
            shared key), at least 16 bytes; every byte of it changes the mask.
        length: number of 32-bit words.

    Returns:
        ``(length,)`` uint32 array; adding it modulo 2**32 masks a vector of that length.

    Raises:
        ValueError: the seed is shorter than 16 bytes, or the length is negative.
    """
    if len(seed) < 16:
        raise ValueError(f"mask seed must be at least 16 bytes, got {len(seed)}")
    if length < 0:
        raise ValueError(f"mask length must be non-negative, got {length}")
    key = hashlib.sha256(DOMAIN + seed).digest()
    # Each seed keys exactly one stream (seeds are fresh every round), so a zero nonce is safe.
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(WORD_BYTES * length)) + encryptor.finalize()
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32, copy=False)
