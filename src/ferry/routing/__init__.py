"""Routing: which version answers a request. ``target`` (the seam: ``Target`` and
``VersionTarget``), ``policies`` (pure deciders), ``split`` (the split/pin target),
``endpoints`` (model name -> target, applied atomically) and ``control`` (set, roll back,
persist, follow other servers). See docs/rollouts.md."""
