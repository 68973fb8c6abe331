"""``python -m edgecloud.loadgen``: the load generator (see ``edgecloud.loadgen.cli.main``)."""

from edgecloud.loadgen.cli import main

main()
