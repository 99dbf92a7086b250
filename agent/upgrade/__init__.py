"""Firmware and software upgrades: journaled state machine, download, verify, install."""
