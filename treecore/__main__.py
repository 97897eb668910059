"""Command line: `python -m treecore detect ...` and `python -m treecore model ...`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from treecore import cli_detect, cli_model
from treecore.errors import TreecoreError


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and return its exit code (0 ok, 2 bad input)."""
    parser = argparse.ArgumentParser(prog="python -m treecore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (cli_detect, cli_model):
        sub = commands.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except TreecoreError as exc:  # bad input: one line on stderr, nothing written
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
