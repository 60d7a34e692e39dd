"""`<env python> -m workers ...`: the worker program."""

from workers.serve import main

main()
