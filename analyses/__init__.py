"""Analyses: one class per question the paper raises, each a subclass of
``amdm_geom.analyses.base.Analysis`` (the contract, in full, is there), registered by name under
the entry-point group ``amdm_geom.analyses`` as ``"package.module:Class"`` (a user's package adds
its own the same way: one class and one entry point) and run by one runner,
``amdm_geom.app.runner.run_analysis``, for ``amdm-geom analyze``, ``amdm-geom validate`` and the
notebooks alike.

An analysis declares the claim family it judges (``family``: the section of the report its
verdicts go to), whether it takes trace stores (``stores``), the kinds of store ``validate`` gives
it (``reads``), the runs it plans for itself (``run_module`` and ``planned``) and its scheduling
priority; ``validate``'s plan, the engine's tasks, the report's sections and the README's list of
analyses follow from those declarations. Which analyses there are is the registry's answer
(``amdm_geom.app.runner.registry.analysis_names``, or ``amdm-geom analyze --help``), not a list
kept here.

The subpackages are the claim families, none importing another: each holds its analyses' modules
and the helpers only they use; what two families share is in ``common`` (reading a store's slots:
written or not, finite samples; paired differences; Prop. 3.2's membership on recorded runs) or in
the core. Geometry and bounds come from ``amdm_geom.core``; no analysis re-implements them.
"""
