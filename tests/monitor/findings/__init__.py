"""Devices and scenarios that cause each kind of monitor finding on real Tango servers."""
