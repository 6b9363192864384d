"""`python -m rating_service.cli`: the `rating` command, for when its script is not installed."""

from rating_service.cli import main

main()
