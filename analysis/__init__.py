"""Analysis of dynsim run files: power-law aging fits, scaling collapse, feature-space reduction
and fragility, and the ``analysis report`` command. Reads files only through ``dynsim.store``."""
