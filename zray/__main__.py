from zray.cli import main

main()
