"""Research beside the product: the seed study and the CRF threshold sweep (see README.md here)."""
