"""Composition root: the ``remon`` command and the demo that wires every role together.

Nothing in the product packages imports this package; it only assembles them.
"""

__version__ = "0.1.0"
