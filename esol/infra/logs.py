"""Logging set-up for every ``esol`` process; imports nothing heavy.

Kept apart from :mod:`esol.infra.runtime` (which imports torch) so that the command line can log, and
lease its GPUs, before anything imports torch.
"""

from __future__ import annotations

import logging
import sys


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr (Snakemake sends it to the rule's log file) with timestamps."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
