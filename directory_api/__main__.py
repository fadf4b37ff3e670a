from directory_api.cli import main

main()
