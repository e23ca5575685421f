"""The interface every serial device simulator offers (sans-I/O, driven by a clock it is given).

A runner (``edge_agent.virtual_serial``) puts a simulator at the far end of a real
pseudo-terminal: bytes the host writes go to :meth:`SerialSim.receive`; whatever
:meth:`SerialSim.poll` returns is written back. The runner sleeps until
:meth:`SerialSim.next_deadline` or until bytes arrive, so an idle simulator costs no CPU.
"""

from __future__ import annotations

from typing import Protocol


class SerialSim(Protocol):
    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the host arrived at monotonic time ``now`` (seconds)."""
        ...

    def poll(self, now: float) -> bytes:
        """Bytes the device sends at ``now`` (b"" when it has nothing to say)."""
        ...

    def next_deadline(self) -> float | None:
        """The monotonic time at which :meth:`poll` next has something to do, or None."""
        ...

    def replug(self, now: float) -> None:
        """Plugged in again after an unplug: link state reset, memory kept (as a real device)."""
        ...

    @property
    def unplugged(self) -> bool:
        """True once the simulated device has been pulled out (the runner closes the pty)."""
        ...
