from edgecloud.decision.app import main

main()
