"""mta-ablate: an ablation and sweep platform for Multi-Token Attention (arXiv 2504.00927)."""

__version__ = "0.1.0"
