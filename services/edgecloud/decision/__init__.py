"""The offloading decision by in-context learning (paper, section III): keywords, reward, replay, policies."""
