from zray.head.main import main

main()
