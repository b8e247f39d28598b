"""eqlstream's development tools: the embedded broker, the demo and the synthetic event generator.

Not part of the product: ``make setup`` installs this package beside it, which adds the ``demo``
and ``broker`` commands to ``python -m app`` through the ``eqlstream.commands`` entry points.
"""
