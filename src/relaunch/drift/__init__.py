"""``fab drift``: what production runs that the inventory and runbooks do not describe.

:mod:`~relaunch.drift.collect` reads a host's state manifest (read only) and keeps the
references rebuilds and drills record; :mod:`~relaunch.drift.compare` compares production's
manifest with the newest reference (pure, with the ignore list); :mod:`~relaunch.drift.draft`
turns the findings into inventory and runbook additions to review; :mod:`~relaunch.drift.check`
is the whole check for the task layer and the drill.

Nothing is imported here: the inventory's schema reads ``relaunch.drift.compare.KINDS``.
"""
