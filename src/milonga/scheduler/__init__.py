"""CallbackScheduler: Tango event callbacks served fairly from bounded queues on worker threads."""
