"""remon's own firmware bridge protocol (docs/firmware-bridges.md), host side, sans-I/O.

Microcontroller boards beside devices with no standard interface (a PEF flow sensor, a
medication dispenser, kiosk peripherals) speak COBS-framed, CRC-32-checked binary messages over
USB-CDC or a UART: :mod:`~firmware_bridges.framing` (frames), :mod:`~firmware_bridges.messages`
(payload layouts), :mod:`~firmware_bridges.host` (one link's session: typed events out, ACKs
after the events they acknowledge), :mod:`~firmware_bridges.sim_boards` (the three boards as
serial simulators) and :mod:`~firmware_bridges.pef_curves` (synthetic flow-time curves).
"""
