"""Fixtures of the command tests.

Most tests run the CLI in-process (the ``cli``/``ok`` fixtures of
:mod:`desync_core.testing.fixtures`: the same argument parsing, error handling and exit
codes as the ``desync`` program, without interpreter start-up per command);
``test_subprocess.py`` checks the real program end to end.
"""
