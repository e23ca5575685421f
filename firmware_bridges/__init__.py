"""Sans-I/O codecs for microcontroller firmware bridges (PEF board, dispensers, kiosks)."""
