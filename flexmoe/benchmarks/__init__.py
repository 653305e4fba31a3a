"""`flexmoe-bench`: compare assignment backends and federated policies."""
