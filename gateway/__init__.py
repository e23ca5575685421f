"""Edge side of the edge→cloud contract: the wire format (pure), the durable outbox and the relay."""
