"""Subcommands of the ``mofdft`` CLI, one module per capability.

``COMMANDS`` lists (name, function) pairs in the order they appear in ``mofdft --help``. A command is
added here only when its capability exists: there are no placeholder commands.
"""

from __future__ import annotations

from mofdft_jax.commands.datagen import datagen
from mofdft_jax.commands.diagnose import diagnose
from mofdft_jax.commands.info import info
from mofdft_jax.commands.ks import ks
from mofdft_jax.commands.reproduce import reproduce
from mofdft_jax.commands.sample_visited import sample_visited
from mofdft_jax.commands.solve import solve_command
from mofdft_jax.commands.train import train_command
from mofdft_jax.commands.verify import verify

COMMANDS: list[tuple[str, object]] = [
    ("info", info),
    ("datagen", datagen),
    ("ks", ks),
    ("solve", solve_command),
    ("train", train_command),
    ("diagnose", diagnose),
    ("sample-visited", sample_visited),
    ("reproduce", reproduce),
    ("verify", verify),
]
