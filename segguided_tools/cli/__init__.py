"""The ``segguided`` command line (entry point: ``segguided_tools.cli.main:main``)."""
