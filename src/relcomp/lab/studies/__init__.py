"""The studies, listed once. Each is one module with ``run(prof, harness, data_dir)`` (train
through the :class:`~relcomp.lab.harness.Harness`, write ``results.json`` and the reports, return
the results), ``markdown(results, figure_dir)`` and ``figures(results, fig_dir)``; a profile
(``configs/<name>.toml``) names its study by ``kind``. ``relcomp reproduce`` runs them and
``relcomp report`` renders their results files from this list alone."""
from __future__ import annotations

from types import ModuleType

from . import active, baseline, beyond, crowd, likelihoods, loop, own, paper, ties

STUDIES: dict[str, ModuleType] = {"paper": paper, "beyond": beyond, "active": active, "crowd": crowd, "ties": ties,
                                  "bt": baseline, "loss": likelihoods, "own": own, "loop": loop}
