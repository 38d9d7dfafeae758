"""What the client, the backends, the servers and the ost wing share below them: the one HTTP
client with its retry rules (:mod:`.http`), byte metering (:mod:`.traffic`) and the bridge
from synchronous calls to zarr's event loop (:mod:`.sync`)."""
