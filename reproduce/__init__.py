"""The reproduction suite: one module per paper claim group (DESIGN.md "Results contract").

Each experiment module ``reproduce/<name>.py`` defines::

    EXPERIMENT = "<name>"
    def run(ctx: reproduce.runner.RunContext) -> pathlib.Path   # the results folder it wrote

reads its sizes from ``reproduce/configs/<name>.toml`` (sections ``[quick]``, ``[cpu]``,
``[paper]``) through :func:`reproduce.runner.load_config`, and writes its folder with
:func:`reproduce.common.write_experiment`. :data:`reproduce.runner.EXPERIMENTS` lists them in
the order ``mofdft reproduce`` runs them.
"""
