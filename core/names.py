"""The names the config's Literals are made of, in a module with no dependencies (a bare GPU box imports it).

- ``CONDITIONINGS``: the controller's conditionings (``model.maps`` renders each).
- ``PROTOCOLS``: the evaluation protocols (``eval.protocol`` gives each its settings).
- ``TRACKERS``: the point trackers (``eval.trackers`` builds each).
"""

PROTOCOLS: tuple[str, ...] = ("official", "project")
TRACKERS: tuple[str, ...] = ("lk", "cotracker")
CONDITIONINGS: tuple[str, ...] = ("entity+gaussian", "entity", "gaussian", "none", "point", "trajectory", "dragnuwa-flow", "box")
