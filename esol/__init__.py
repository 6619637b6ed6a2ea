"""esol-wsss: a reproducible implementation of ESOL (Expansion and Shrinkage of Localization,
NeurIPS 2022) for weakly-supervised semantic segmentation."""

__version__ = "0.1.0"
