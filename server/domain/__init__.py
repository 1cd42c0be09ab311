"""Pure domain rules: plain Python, time and ids passed in."""
