"""Fleet management (issue 8), first slice: signed envelopes, pinned keys and rotation, allow-listed commands.

Configuration push with rollback, updates, diagnostics upload and certificate rotation are not built yet.
"""
