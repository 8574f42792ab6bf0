"""govnode: the generated wire-contract package (govnode.v1 stubs from proto/govnode/v1)."""
