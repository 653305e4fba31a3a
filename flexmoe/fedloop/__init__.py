"""The thin federated loop: data and partitions, clients, server rounds, fitness, metrics."""
