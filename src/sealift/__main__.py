from sealift.cli import main

main()
