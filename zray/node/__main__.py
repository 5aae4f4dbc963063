from zray.node.main import main

main()
