"""A device source that never finishes importing, as a server stuck on hardware would."""

import threading

threading.Event().wait()
