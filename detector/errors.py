"""The one error every ``flowbreaker`` command raises for bad usage or unusable input.

It lives at the bottom of the import graph (``detector`` imports nothing of the project's
other packages), so the shell (``streams``) and the offline tools (``models``) raise the
same class without ``models`` importing ``streams``. ``streams.cli.main.main`` prints it as one
line, ``flowbreaker COMMAND: REASON``, and exits 2 (docs/contract.md, section 5).

Raise it with the reason only; the command's name is added by the CLI:

>>> try:
...     raise UsageError("--days must be > 0, got 0")
... except UsageError as err:
...     print(f"flowbreaker simulate: {err}")
flowbreaker simulate: --days must be > 0, got 0

The detector's own input errors (``EventError``, ``PolicyError``) and ``ModelError``
stay separate classes because code catches them specifically; the CLI prints them in the
same style.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """A bad argument or unusable input (unreadable file, impossible combination of flags):
    one line for a human, exit code 2."""
