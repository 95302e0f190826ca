"""`python -m app.cli` (how `portal serve --workers N` starts each worker process)."""

from app.cli import main

if __name__ == "__main__":
    main()
