"""The error of every file rv2dist reads or writes."""


class StoreError(ValueError):
    """An activation store or result file is missing, malformed, incomplete or cannot be
    written; the message names the file and the layer, chunk or value at fault."""
