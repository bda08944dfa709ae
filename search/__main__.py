"""``python -m search`` is the ``hpsearch`` command."""

from search.cli import main

if __name__ == "__main__":
    main()
