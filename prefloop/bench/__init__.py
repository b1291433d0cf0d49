"""`prefloop bench …`: benchmarks run against the services `prefloop up` started."""
