"""`appliance` command line: `parser` declares the subcommands, `commands` runs them, `connect`
writes agent configs."""

from __future__ import annotations

from appliance.cli.parser import build_parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


__all__ = ["build_parser", "main"]
