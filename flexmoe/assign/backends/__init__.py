"""Built-in backends, one module each: ``NAME``, ``EXACT``, ``REQUIRED_MODULES``,
``solve(problem, *, time_limit=None, seed=None, **options)`` and optionally
``unsupported(problem)`` and ``VARIANT_OPTION``. The registry loads them in
:data:`flexmoe.assign.registry.BUILTIN` order."""
