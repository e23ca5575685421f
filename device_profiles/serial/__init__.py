"""Serial device protocols (sans-I/O): ASTM E1381/E1394 meters, LifeScan OneTouch Ultra 2.

Each protocol module turns bytes into typed events and back; its paired simulator speaks the
same bytes from the device's side. The edge agent's serial transport feeds them.
"""
