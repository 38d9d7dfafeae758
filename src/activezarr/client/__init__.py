"""The client side: ActiveReduction, ActiveStore, the ``active`` fsspec protocol, the engine
that runs planned chunks on a backend, and its Report.
"""
