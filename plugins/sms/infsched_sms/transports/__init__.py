"""SMS transports: how a message reaches the operator."""
