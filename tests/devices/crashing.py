"""A device source that fails while the server starts, as a broken driver would."""

raise RuntimeError("simulated hardware fault: cannot open /dev/ttyUSB7")
