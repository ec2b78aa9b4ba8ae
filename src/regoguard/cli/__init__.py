"""The command line. :func:`main` is the ``regoguard`` console script; each command is a module here
(argument parsing and wiring only), and :mod:`.main` puts them together."""

from regoguard.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
