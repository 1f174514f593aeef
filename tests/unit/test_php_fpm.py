"""A PHP app served by PHP-FPM (systemd.php_fpm): its unit, its pool, a FastCGI virtual host, its packages."""

from __future__ import annotations

import subprocess

import pytest
from pydantic import ValidationError

from relaunch.inventory.model import Inventory, SystemdApp
from relaunch.remote import HostKey
from relaunch.render import TEMPLATES_DIR, RenderContext, render_host
from relaunch.runbooks import render_runbook
from tests.unit.test_render import example_inventory, fake_secrets, tls_certificate  # noqa: F401 (autouse: the certificate)

IMAGES = {"blog": {"web": "r/example/blog@sha256:" + "a" * 64, "db": "r/example/postgres@sha256:" + "b" * 64}}


def php_inventory(**php: object) -> Inventory:
    """The example with its stats app made a PHP app (the document root /usr/share/wordpress)."""
    inv = example_inventory()
    data = inv.model_dump(mode="json", exclude_none=True)
    for app in data["apps"]:
        if app["name"] == "stats":
            app["user"] = "www-data"
            app["env"] = {"WP_ENV": "production"}
            app["systemd"] = {"php_fpm": {"root": "/usr/share/wordpress", **php}, "packages": ["php-mysql"]}
    return Inventory.model_validate(data)


def rendered(inv: Inventory) -> dict[str, str]:
    ctx = RenderContext(inventory=inv, secrets=fake_secrets(inv), images=IMAGES, sandbox=True,
                        host_key=HostKey.generate(), templates_dir=TEMPLATES_DIR)
    return {f.path: f.content.decode() for f in render_host(ctx)}


def test_php_fpm_app_gets_its_own_unit_as_its_user_and_its_pool() -> None:
    files = rendered(php_inventory(settings={"upload_max_filesize": "64M"}, max_children=8))
    unit = files["/etc/systemd/system/stats.service"]
    assert "User=www-data" in unit and "Type=notify" in unit
    assert ("ExecStart=/usr/sbin/php-fpm8.2 --nodaemonize --fpm-config /etc/relaunch/stats.php-fpm.conf" in unit)
    assert "EnvironmentFile=/etc/relaunch/stats.env" in unit
    pool = files["/etc/relaunch/stats.php-fpm.conf"]
    assert "listen = 127.0.0.1:8082" in pool and "pm.max_children = 8" in pool
    assert 'php_admin_value[upload_max_filesize] = "64M"' in pool
    assert "clear_env = no" in pool  # the env file reaches getenv()
    assert "\nuser =" not in pool  # the master is not root: a user directive would be ignored


def test_php_fpm_app_is_served_by_fastcgi_from_its_document_root() -> None:
    vhost = rendered(php_inventory())["/etc/nginx/sites-available/relaunch-stats.conf"]
    assert "root /usr/share/wordpress;" in vhost
    assert "fastcgi_pass 127.0.0.1:8082;" in vhost and "proxy_pass" not in vhost
    assert "fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;" in vhost
    assert "try_files $uri $uri/ /index.php$is_args$args;" in vhost
    assert "listen 443 ssl;" in vhost  # TLS as for every app
    other = rendered(php_inventory())["/etc/nginx/sites-available/relaunch-notes.conf"]
    assert "proxy_pass http://127.0.0.1:8083;" in other and "fastcgi" not in other


def test_php_fpm_package_is_installed_by_the_apps_runbook() -> None:
    inv = php_inventory(version="8.2")
    ctx = RenderContext(inventory=inv, images=IMAGES, sandbox=True, templates_dir=TEMPLATES_DIR)
    text = render_runbook(ctx)
    assert "php8.2-fpm php-mysql" in text
    assert SystemdApp(php_fpm={"root": "/x"}, packages=["php8.2-fpm"]).needed_packages == ["php8.2-fpm"]


@pytest.mark.parametrize("bad", [
    {"unit_template": "a.j2", "php_fpm": {"root": "/x"}},
    {"command": ["/bin/true"], "php_fpm": {"root": "/x"}},
    {"php_fpm": {"root": "/x", "version": "8.2; rm"}},
    {"php_fpm": {"root": "/x", "settings": {"memory_limit": "1G\n[evil]"}}},
    {"php_fpm": {"root": "/x", "settings": {"Bad Key": "1"}}},
    {"php_fpm": {"root": "relative"}},
    {"php_fpm": {"root": "/x", "index": "../index.php"}},
])
def test_php_fpm_refuses_what_would_break_its_files(bad: dict) -> None:
    with pytest.raises(ValidationError):
        SystemdApp.model_validate(bad)


@pytest.mark.skipif(subprocess.run(["which", "systemd-analyze"], capture_output=True).returncode != 0,
                    reason="no systemd-analyze")
def test_php_fpm_unit_parses(tmp_path) -> None:
    unit = tmp_path / "stats.service"
    unit.write_text(rendered(php_inventory())["/etc/systemd/system/stats.service"])
    run = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    problems = [line for line in run.stderr.splitlines()
                if "stats.service" in line and "php-fpm8.2" not in line and "Command " not in line]
    assert not [p for p in problems if "Unknown" in p or "Invalid" in p or "Failed to parse" in p], run.stderr
