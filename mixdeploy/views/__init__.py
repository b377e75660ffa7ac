"""How each command's result looks to a person: rich tables and lines, one module per command.

The result types and their `to_dict()` (the `--json` output) live in the stage modules; these
functions only lay them out, on the console the command passes in.
"""


def dash_or(value, spec: str) -> str:
    """`value` formatted with `spec`, or '-' where there is none (a metric a backend lacks)."""
    return "-" if value is None else format(value, spec)
