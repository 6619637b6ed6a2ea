"""Inference: CAMs of the classifier and predictions of trained models on images."""
