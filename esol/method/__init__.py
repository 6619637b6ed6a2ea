"""The method: the ESOL classifier and its three training stages."""
