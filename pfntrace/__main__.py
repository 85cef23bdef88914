from pfntrace.cli import main

main()
