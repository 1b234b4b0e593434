"""`python -m app ...`: the headless CLI (see app/cli.py)."""

from app.cli import main

raise SystemExit(main())
