"""All I/O of a node: transport, store, workers, web, CLI, benchmarks."""
