from preforkd.cli import main

main()
