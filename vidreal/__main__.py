from vidreal.cli import main

main()
