"""Offloading policies behind one interface (``base.Policy``), selectable by name (``POLICY_REGISTRY``)."""
