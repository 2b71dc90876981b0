"""A module that fails at import, like an app with a typo deployed."""

raise RuntimeError("this app is broken on purpose")
