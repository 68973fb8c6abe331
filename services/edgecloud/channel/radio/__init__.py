"""Downlink radio models: what rate each resource block would carry to each user, slot by slot."""
