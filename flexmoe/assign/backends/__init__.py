"""Built-in backends, one module (or package) each: ``NAME``, ``EXACT``, ``VARIANTS`` (a
tuple of :class:`~flexmoe.assign.Variant`, the default first: what each imports and which
pip extra installs it), ``VARIANT_OPTION`` (the keyword the variant is passed as),
``solve(problem, *, time_limit=None, seed=None, **options)``, and optionally
``unsupported(problem)`` and ``SESSION`` (a session class, see
:class:`~flexmoe.assign.Solver`). The registry loads them in
:data:`flexmoe.assign.registry.BUILTIN` order. ``_highs`` holds the HiGHS plumbing that
``milp`` and ``convex`` share."""
