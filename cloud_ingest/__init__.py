"""remon cloud_ingest."""
