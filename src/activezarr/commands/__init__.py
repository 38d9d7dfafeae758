"""The faces on top: the ``activezarr`` command line and its demo.
"""
