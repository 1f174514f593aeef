"""The sandbox cloud: a local DigitalOcean whose Droplets are real Debian hosts in Docker.

Pieces: ``image`` builds the base image from Debian's archive, ``docker_backend`` turns
Droplets into containers on the sandbox network, ``store`` keeps the cloud's state in
SQLite, ``api`` serves the DigitalOcean HTTP API on loopback, ``service`` runs that API
in the background for the tasks.
"""

from relaunch.cloud.local import state_dir

#: Every container, network, volume and image the sandbox creates carries this label.
LABEL = "relaunch.sandbox"
#: Label naming the sandbox network a container, volume or snapshot belongs to, so that
#: two sandboxes (the user's and a test session's) can share a Docker daemon and each be
#: removed whole without touching the other.
NETWORK_LABEL = "relaunch.sandbox.network"


__all__ = ["LABEL", "NETWORK_LABEL", "state_dir"]
