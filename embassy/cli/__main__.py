"""`python -m embassy.cli` (the integration tests run it so)."""

from embassy.cli import main

if __name__ == "__main__":
    main()
