"""Host side: finding sandboxes (discovery) and running local ones (local, supervisor)."""
