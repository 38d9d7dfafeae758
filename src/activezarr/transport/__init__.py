"""What the client, the backends and the planner share below them: byte metering
(:mod:`.traffic`) and the bridge from synchronous calls to zarr's event loop (:mod:`.sync`)."""
