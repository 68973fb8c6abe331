"""``python -m edgecloud.llmsim``: run the simulator (see ``edgecloud.llmsim.app.main``)."""

from edgecloud.llmsim.app import main

main()
