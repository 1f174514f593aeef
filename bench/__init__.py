"""The recovery-time benchmark (``bench/run``): relaunch against a by-hand baseline and the machine's floor.

Not part of the test suite and not part of the package: it runs from a checkout, in the
local sandbox cloud (see the README's benchmark section).
"""
