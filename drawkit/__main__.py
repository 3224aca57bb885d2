from drawkit.cli import main

main()
