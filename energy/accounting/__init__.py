"""Energy accounting: a node's measured energy split among its replicas, other processes and idle."""
