"""LLM simulator: an OpenAI-compatible server whose timing follows named latency profiles.

``latency`` (the model and its clocks), ``engine`` (admission, queueing, token release times)
and ``content`` (exact-length text) are plain library code that experiments reuse in virtual
time; ``serving`` maps OpenAI requests onto them and ``app`` is the HTTP shell.
"""
