from kdstudio.cli import main

main()
