"""The `gatehouse` command line. Each subcommand lives in `scripts/cmd_<name>.py`."""
