"""SegGuidedNet: 3D brain-tumour segmentation with supervised segmentation-attention gates.

This package is framework-free: it never imports Flower. Above it sit the shared federation
code (``segguided_federation``), the two Flower apps (``server``, ``client``) and the tools
(``segguided_tools``).
"""

__version__ = "0.1.0"
