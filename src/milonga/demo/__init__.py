"""The demo control system and the `milonga demo` runner."""
