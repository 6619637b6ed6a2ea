"""Datasets: one on-disk layout (VOC-like) shared by the synthetic, VOC and COCO sources."""
