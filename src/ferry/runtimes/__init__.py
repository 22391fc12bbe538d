"""Runtimes load and run one model version; see ``base.Runtime`` for the contract."""
