"""Installers: what turns a verified package into the running version."""
