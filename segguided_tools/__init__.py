"""Tools around the Flower apps: the ``segguided`` command line, experiments, certificates, local simulations, the run launcher.

Nothing in ``segguided_model``, ``segguided_federation``, ``server`` or ``client`` imports
this package.
"""
