"""Record contracts: the .avsc files under ``avro/`` and the one codec every component uses."""
