"""Device-side value types and (later) sans-I/O device codecs. Pure: no I/O here."""
