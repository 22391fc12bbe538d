"""Generated gRPC modules (``make protos``); see scripts/gen_protos.py."""
