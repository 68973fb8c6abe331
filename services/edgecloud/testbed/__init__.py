"""The local testbed: Redis, the edge LLM (real vLLM or the simulator), the cloud simulator and the gateway
as local processes, started, health-checked, demonstrated with one real prompt, and stopped on Ctrl-C."""
