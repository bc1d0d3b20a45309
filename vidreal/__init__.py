"""vidreal: temporally consistent synthetic-to-real video translation."""
__version__ = "0.1.0"
