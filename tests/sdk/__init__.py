"""The agency SDK (govnode_client) and the agency examples, against real nodes."""
