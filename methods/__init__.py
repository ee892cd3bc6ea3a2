"""One package (or module) per paper. Each registers itself with ``registry.methods.register``."""
