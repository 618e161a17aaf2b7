"""The `gatehouse` command line (`gatehouse.cli`, folder `scripts/`). Each subcommand is a `cmd_<name>.py` module."""
