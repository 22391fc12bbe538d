"""Wire protocols over the protocol-neutral ``dataplane``."""
