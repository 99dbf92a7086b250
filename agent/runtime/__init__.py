"""Runtime services: logging, systemd notifications, failpoints, atomic files, privileged seam."""
