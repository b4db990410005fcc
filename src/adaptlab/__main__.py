"""`python -m adaptlab` (used by `accelerate launch -m adaptlab ...`)."""

from adaptlab.cli import main

if __name__ == "__main__":
    main()
