"""autocompress: an RL agent learns how much to prune each layer (AMC), against measured latency."""

__version__ = "0.1.0"
