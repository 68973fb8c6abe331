from edgecloud.experiments.cli import main

main()
