"""The steps of a run, one module per group: hosts (provision, boot, bootstrap), data, restore/verify, apps, switch."""
