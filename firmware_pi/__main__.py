"""`python -m firmware_pi`: the same command line as `fablab-pi`."""

from firmware_pi.cli import app

app(prog_name="fablab-pi")
