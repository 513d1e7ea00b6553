"""Example desync plugin: a flat-directory chunk store (``flat://``)."""
