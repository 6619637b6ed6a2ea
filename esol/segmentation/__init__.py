"""The segmentation network trained on the pseudo labels."""
