"""The machine controller that runs on a Raspberry Pi beside each shared tool.

A badge tap is decided locally from the last valid signed permission snapshot; every
event goes to a durable SQLite outbox before the relay moves, then over MQTT to the
server, and stays in the outbox until the server acknowledges it.
"""

__version__ = "0.1.0"
