"""remon edge_agent."""
