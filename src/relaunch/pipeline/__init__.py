"""The rebuild's spine: a plan of named steps, the journal that makes a run resumable, its report.

``fab rebuild``, ``fab drill`` and ``fab sandbox-up --site`` all run a :class:`plan.Plan`
of the steps in :data:`PHASES` order (each uses the ones it needs).
"""

#: The one vocabulary of phases shared by the rebuild, the drill, the reports and the benchmark.
PHASES = ("preflight", "canary", "provision", "boot", "bootstrap", "golden", "data", "restore", "verify", "start", "health",
          "switch", "handover")
#: Phases whose time is reported but not counted in the RTO: a drill's ``canary`` (the backup that carries it: it
#: stands for the moment production is lost, before any recovery) and ``golden`` (making a golden snapshot), and a
#: rebuild's ``handover`` (after the switch: the site already answers from the new host, which is being made
#: production).
UNTIMED = ("canary", "golden", "handover")
