"""The converter daemon's thin adapters: discovery, pairing, stream, serial output, hotplug,
TCP P1 server, state files, run configuration, systemd notification, and the supervisor
that wires them (architecture.md, Layout)."""
