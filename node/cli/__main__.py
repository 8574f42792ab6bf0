"""``python -m node.cli``: the ``govnode`` command, for a process that starts another (the
console runs `govnode backup` this way, with the interpreter it runs on)."""

from node.cli import main

main()
