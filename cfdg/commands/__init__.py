"""The library's CLI sub-commands; each module exposes `register(subparsers)` and sets `func`.

A new one is listed in `cfdg.cli.add_library_commands`.
"""
