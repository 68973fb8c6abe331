from edgecloud.testbed.cli import main

main()
