"""kuasar-agent, the guest side: debug console, agent API services, processes and containers."""
