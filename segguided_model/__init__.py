"""SegGuidedNet: 3D brain-tumour segmentation with supervised segmentation-attention gates.

This package is framework-free: it never imports Flower. The federated layers live in
``server/`` and ``client/``.
"""

__version__ = "0.1.0"
