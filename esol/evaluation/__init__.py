"""Evaluation: confusion matrices, mIoU / precision / recall, where the seed errors lie, "not scored"."""
