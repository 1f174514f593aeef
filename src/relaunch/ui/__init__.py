"""What the task layer shows (only tasks.py imports this package; the library never prints)."""
