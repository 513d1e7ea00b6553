"""Fixtures of the archive tests (tar, untar, mtree, catar, safe extraction).

``cli`` and ``ok`` (from :mod:`desync_core.testing.fixtures`, through the root
conftest) run the CLI in-process: same parsing, errors and exit codes as the program,
without interpreter start-up per command; a few tests use real subprocesses where
stdin/stdout or the plugin environment matter.
"""
