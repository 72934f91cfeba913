"""Device adapters: one interface per kind of device, real and test implementations behind it."""
