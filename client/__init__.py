"""Desktop and file-streaming clients; installed as streamst.client."""
