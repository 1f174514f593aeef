"""The cloud adapter: the one part of relaunch that talks to DigitalOcean.

`Cloud` is the interface; everything it returns is a small dataclass from
`relaunch.cloud.models`, everything it raises a `relaunch.errors.RelaunchError`.
"""

from .client import Cloud, ssh_key_fingerprint
from .config import DEFAULT_ENDPOINT, load_token, open_site_cloud, read_token_file, site_token, validate_endpoint
from .models import DnsRecord, Droplet, ReservedIp, Snapshot, SshKey
from .retry import RetryPolicy
from .ssh import read_ssh_banner, wait_for_ssh
from .transport import CloudError, CloudNotFound

__all__ = [
    "Cloud", "CloudError", "CloudNotFound", "DEFAULT_ENDPOINT", "DnsRecord", "Droplet", "ReservedIp",
    "RetryPolicy", "Snapshot", "SshKey", "load_token", "open_site_cloud", "read_ssh_banner", "read_token_file",
    "site_token", "ssh_key_fingerprint", "validate_endpoint", "wait_for_ssh",
]
