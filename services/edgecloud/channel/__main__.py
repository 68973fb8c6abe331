from edgecloud.channel.app import main

main()
