"""Edge producers: device adapters and the producer runtime that runs on each Raspberry Pi."""
