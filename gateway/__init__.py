"""Edge side of the edge→cloud contract: wire format (pure), durable outbox, MQTT relay."""
