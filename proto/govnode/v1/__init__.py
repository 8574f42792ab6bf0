"""govnode.v1: generated protobuf and gRPC stubs; regenerate with scripts/gen_protos.py."""
