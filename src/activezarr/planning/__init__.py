"""Client-side planning: from a zarr array and a selection to the chunks to reduce
and the path each takes; reads metadata and layouts, never chunk data.
"""
