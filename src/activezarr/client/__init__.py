"""The client side: ActiveReduction, ActiveStore, the ``active`` and ``ost`` fsspec
protocols, the engine that runs planned chunks on a backend, and its Report.
"""
