from cultureclip.cli.main import main

main()
