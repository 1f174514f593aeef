"""Backups of a site's production host: timestamped dumps and archives with a manifest, retention,
a systemd timer, an off-host restic copy, and the commands that list, check and fetch them.

- ``retention``: the keep/remove policy (pure).
- ``manifest``: a backup's manifest, and checking artifacts against it.
- ``runner``: the stdlib script that runs on the host (copied there as is).
- ``commands``: each database's dump command for the runner's config.
- ``install``: rendering the runner's files and units, putting them on the host.
- ``offsite``: the restic store seen from any host (fetch a backup without the old host).
- ``status``: run one now, status against the RPO, list, verify.
- ``sandbox_store``: the sandbox's backup Droplet (an SFTP repository).
"""
