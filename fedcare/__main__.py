"""``python -m fedcare``: the same as the ``fedcare`` command."""

from fedcare.cli import main

main()
