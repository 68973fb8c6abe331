"""Offloading policies behind one interface (``base.Policy``), selectable by name (``POLICY_REGISTRY``).

Importing this package imports every policy module, so each registers itself (the DQN's torch is
imported only when one is built).
"""

from edgecloud.decision.policies import always, dqn, icl, oracle, random_policy  # noqa: F401
