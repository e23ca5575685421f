"""Sans-I/O codecs for the Bluetooth SIG health profiles (GATT characteristic values).

Bytes in, typed values out; no BLE stack here. Facts: ../shared/docs/PROTOCOLS.md.
"""
