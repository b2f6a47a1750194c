"""The top floor: the `ipa-energy` command line and the demo; it imports every package, none imports it.

One module per group of subcommands (`serve`, `energy`, `plan`, `profile`, `experiment`,
`demo`), each adding its parsers with ``add_parsers(sub)``; :mod:`cli.main` assembles them.
"""
