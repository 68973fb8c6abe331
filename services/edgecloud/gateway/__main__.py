from edgecloud.gateway.app import main

main()
