"""Load generator: real prompts of every service type, realistic arrivals, the LLM-serving field's metrics.

``arrivals`` (send times), ``workload`` (what each request is), ``corpus`` (the prompts) and ``metrics``
(records to summaries) are pure and seeded; ``client`` sends one streamed request and times it,
``runner`` drives a run, ``report`` and ``plots`` write it, ``cli`` is the command. See docs/loadgen.md.
"""
