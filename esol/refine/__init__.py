"""Refinement of CAM seeds into pseudo masks: the dense CRF, and IRN's inter-pixel relations and random walk."""
