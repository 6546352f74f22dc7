"""The ``edgegw`` command: one module per command group, listed in ``main.COMMANDS`` and imported
only for the command a call names; ``common`` holds what they all share."""
