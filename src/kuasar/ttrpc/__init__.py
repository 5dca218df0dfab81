"""Pure-asyncio ttrpc (containerd RPC over a byte stream)."""
